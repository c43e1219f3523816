"""Scratch: convergence of shapes-preset variants (not committed)."""
import json, sys, time, os
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from multimodal.config import model_preset, train_preset
from multimodal.training import Trainer
from multimodal.data import all_combinations, canonical_caption, CocoCaptionDataset
from multimodal.data.transforms import to_pil
from multimodal.evaluation import read_shape_attributes, parse_caption_attributes, attribute_accuracy, retrieval_recall
import dataclasses

def evaluate(model, data_dir, device, steps=50):
    model.eval()
    val = CocoCaptionDataset(data_dir, "val", model.config.image_size)
    meta = json.load(open(f"{data_dir}/annotations/captions_val2017.json"))
    truth_by_id = {im["id"]: im["shape"] for im in meta["images"]}
    combos = all_combinations()
    canon = [canonical_caption(s) for s in combos]
    index = {(s.shape, s.color, s.size, s.position): i for i, s in enumerate(combos)}
    imgs, truths = [], []
    for i in range(len(val)):
        it = val[i]; imgs.append(it["image"]); truths.append(truth_by_id[it["image_id"]])
    imgs = torch.stack(imgs)
    res = {}
    with torch.no_grad():
        e_img = torch.cat([model.encode_image(imgs[i:i+128].to(device)) for i in range(0, len(imgs), 128)])
        e_txt = model.encode_text(canon)
        pos = [index[(t["shape"], t["color"], t["size"], t["position"])] for t in truths]
        res |= retrieval_recall(e_img, e_txt, pos, ks=(1,))
        caps = []
        for i in range(0, len(imgs), 128):
            caps += model.generate_text_from_image(imgs[i:i+128].to(device))
        res |= {f"cap_{k}": v for k, v in attribute_accuracy([parse_caption_attributes(c) for c in caps], truths).items()}
        specs = [dataclasses.asdict(s) for s in combos]
        for name, kw in [("t2i", dict(use_diffusion=True)), ("fast", dict(use_diffusion=False))]:
            out = []
            for i in range(0, 180, 90):
                out.append(model.generate_image_from_text(canon[i:i+90], num_inference_steps=steps, guidance_scale=3.0, seed=0, **kw).cpu())
            out = torch.cat(out)
            preds = [read_shape_attributes(to_pil(x)) for x in out]
            res |= {f"{name}_{k}": v for k, v in attribute_accuracy(preds, specs).items()}
    print("caption examples:", caps[:3])
    return res

if __name__ == "__main__":
    variants = json.loads(sys.argv[1])
    device = sys.argv[2] if len(sys.argv) > 2 else "auto"
    for v in variants:
        name = v.pop("name"); tr = v.pop("train", {})
        mc = model_preset("shapes", **v)
        tc = train_preset("shapes", data_dir="data/shapes", output_dir=f"/tmp/exp_{name}", device=device, num_workers=4, sample_every_epoch=False, **tr)
        t = time.time()
        trainer = Trainer(mc, tc)
        trainer.run()
        ttrain = time.time() - t
        res = evaluate(trainer.ema.module, "data/shapes", trainer.device)
        print(json.dumps({"name": name, "train_s": round(ttrain, 1), "steps": trainer.step, **{k: round(x, 3) for k, x in res.items()}}), flush=True)
