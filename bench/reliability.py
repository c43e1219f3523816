"""`python -m bench.reliability`: the bad-input campaign (issue 37), for anyone to run again.

    python -m bench.reliability                         # every case: about ten minutes on 2 shared cores
    python -m bench.reliability --quick                 # a few cases of each surface: three minutes
    python -m bench.reliability --only page --keep /tmp/campaign   # one surface; keep every case's folder

It builds its own material offline in a temporary folder (a tiny shapes set, a tiny trained run,
a LoRA adapter of it and its ONNX export: under a minute), then tries each bad input as a
process of its own, on a copy of whatever the case damages: train.py, generate_t2i.py,
generate_i2t.py, evaluate.py and app.py; `python -m multimodal.data check|convert`,
`python -m multimodal.adapters merge`, `python -m multimodal.export`, `python -m
multimodal.onnx_run`; and the web page through its HTTP API (app.py serving the tiny run).

Each case records the exit code, whether a traceback was printed, the lines on stderr, whether
it hung (past its timeout), whether an input it was given changed or vanished ("data lost"),
its peak memory (the process's own maximum resident set, from wait4 in bench/measured.py; the page
server's from its VmHWM, reset before each request), and the first line of its message. A case ends in one of:
refused (exit code not 0, no traceback, at most three lines), handled (exit code 0 and the
output checks out), or a failure, the worst it did of: data lost, hang, traceback, killed by a
signal, memory (2 GB more than the same surface's good input), wrong output, accepted bad input,
long message, refused valid input. Then training is killed with SIGKILL at three points of a
run, and resumed, to count the steps lost against the save interval.

The rows go to a JSON file (--output); the markdown tables docs/RELIABILITY.md shows are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "bench" / "reliability.json"
MATERIAL_MARK = "material.json"  # in a --keep folder: the material is built, a later campaign reuses it

# train.py's flags for a model that builds and trains in seconds (tests/conftest.py's tiny model).
TINY_FLAGS = (
    "--image-size 28 --latent-channels 32 --encoder-width 8 --decoder-width 8 --embed-dim 32 "
    "--proj-hidden-dim 64 --pool-channels 4 --caption-width 32 --caption-layers 1 --caption-heads 2 "
    "--unet-width 32 --unet-blocks 1 --unet-heads 2 --num-timesteps 100 --freeze-bert --num-workers 0 "
    "--image-encoder simple_cnn"
).split()

# What the package's guarantees are measured against.
TRACEBACK = "Traceback (most recent call last)"
MAX_LINES = 3  # a refusal in "one line": a warning or a progress bar before it may be shown too
MEMORY_MARGIN_MB = 2048  # a bad input may take this much more than the same surface's good input

# What a case expects of the package: bad input is refused; some odd but valid input must work;
# for some, either is right (a bound of its own, or a refusal).
REFUSE, HANDLE, EITHER = "refuse", "handle", "either"

# Outcomes: the first two are clean, the rest are failures.
REFUSED, HANDLED = "refused", "handled"
LOST, HANG, TRACED, CRASHED, MEMORY = "data lost", "hang", "traceback", "killed by a signal", "memory"
WRONG, ACCEPTED, LONG, WRONGLY_REFUSED = "wrong output", "accepted bad input", "long message", "refused valid input"
CLEAN = (REFUSED, HANDLED)

COMMANDS = {
    "train.py": ["train.py"],
    "generate_t2i.py": ["generate_t2i.py"],
    "generate_i2t.py": ["generate_i2t.py"],
    "evaluate.py": ["evaluate.py"],
    "data check": ["-m", "multimodal.data", "check"],
    "data convert": ["-m", "multimodal.data", "convert"],
    "adapters merge": ["-m", "multimodal.adapters", "merge"],
    "export": ["-m", "multimodal.export"],
    "onnx_run": ["-m", "multimodal.onnx_run"],
    "app.py": ["app.py"],
}
SURFACES = [*COMMANDS, "page"]


def log(message: str) -> None:
    print(f"[reliability {time.perf_counter() - START:5.0f}s] {message}", file=sys.stderr, flush=True)


START = time.perf_counter()


# -- running one process and measuring it --------------------------------------------------
@dataclass
class Process:
    """What one process did."""

    exit: int | None  # None: still running at its timeout (then killed)
    seconds: float
    peak_mb: float
    stdout: str
    stderr: str
    stopped: bool = False  # killed on purpose (stop_when)


def child_env(root: Path) -> dict[str, str]:
    """The environment every process of the campaign gets: offline, one thread (two cases share
    two cores), its temporary files inside the campaign's folder."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(root / "gradio"), MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TMPDIR=str(root / "tmp"))
    return env


def execute(argv: list[str], cwd: Path, logs: Path, timeout: float, memory_cap_mb: int, env: dict[str, str],
            stop_when: Callable[[Path], bool] | None = None) -> Process:
    """Run `argv` in `cwd` in a session of its own, its address space capped at `memory_cap_mb`
    (so a case that would take all the machine's memory fails instead), killed with its children
    after `timeout` s, or as soon as `stop_when(stderr file)` holds. It runs under bench/measured.py
    so that its peak memory is its own ru_maxrss, not the campaign's (see there); a process killed
    here gets its VmHWM read just before."""
    logs.parent.mkdir(parents=True, exist_ok=True)
    out, err, result = logs.with_suffix(".stdout"), logs.with_suffix(".stderr"), logs.with_suffix(".wait")
    result.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", str(Path(__file__).with_name("measured.py")), str(result), str(memory_cap_mb)]
    begin = time.perf_counter()
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(launcher + argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                env=env, start_new_session=True)
    RUNNING.add(proc.pid)
    deadline, stopped, timed_out, killed_peak_kb = begin + timeout, False, False, 0
    while not os.waitpid(proc.pid, os.WNOHANG)[0]:
        timed_out = time.perf_counter() > deadline
        stopped = not timed_out and stop_when is not None and stop_when(err)
        if timed_out or stopped:
            killed_peak_kb = high_water_kb(children_of(proc.pid))
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a child it left behind (a loader worker) goes too
    except ProcessLookupError:
        pass
    RUNNING.discard(proc.pid)
    seconds = time.perf_counter() - begin
    if result.exists():
        status, peak_kb = (int(field) for field in result.read_text().split())
        exit_code = os.waitstatus_to_exitcode(status)
    else:  # killed here, with the launcher
        exit_code, peak_kb = -signal.SIGKILL, killed_peak_kb
    read = lambda path: path.read_bytes().decode("utf-8", "replace")  # noqa: E731
    return Process(None if timed_out else exit_code, seconds, peak_kb / 1024, read(out), read(err), stopped)


def children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def high_water_kb(pids: list[int]) -> int:
    """The largest VmHWM (peak resident set, KiB) among `pids`; 0 for those already gone."""
    peak = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peak = max([peak] + [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")])
    return peak


def exception_line(text: str) -> str:
    """The exception a traceback ends with ("ValueError: …"), or the last line when there is none."""
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    if TRACEBACK in text:
        start = max(index for index, line in enumerate(lines) if TRACEBACK in line)
        ending = [line for line in lines[start + 1:] if line.strip() and not line[0].isspace()]
        if ending:
            return ending[0].strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


RUNNING: set[int] = set()  # the process groups the campaign has started and not yet reaped


def stop_running() -> None:
    """Kill every process group still running (the campaign was stopped): each is in a session of
    its own, so nothing else would."""
    for pid in list(RUNNING):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def message_lines(text: str) -> list[str]:
    """The lines a person sees: of a line a progress bar redrew, only its last state."""
    return [shown for line in text.split("\n") if (shown := line.split("\r")[-1].strip())]


# -- "data lost": every input's content before and after --------------------------------------
class Fingerprints:
    """Each file's content digest under some paths, recomputed only for files whose stat changed."""

    def __init__(self) -> None:
        self.cache: dict[tuple, str] = {}
        self.lock = threading.Lock()

    def file(self, path: Path, info: os.stat_result) -> str:
        key = (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self.lock:
            known = self.cache.get(key)
        if known is None:
            digest = blake2b(digest_size=16)
            with open(path, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
            known = digest.hexdigest()
            with self.lock:
                self.cache[key] = known
        return known

    def of(self, paths: list[Path]) -> dict[str, str]:
        """path → what it is: a file's digest, "folder", a link's target; what is absent is left out."""
        seen: dict[str, str] = {}
        for top in paths:
            for path in walk(top):
                try:
                    info = path.lstat()
                    if stat.S_ISLNK(info.st_mode):
                        seen[str(path)] = "link to " + os.readlink(path)
                    elif stat.S_ISDIR(info.st_mode):
                        seen[str(path)] = "folder"
                    elif stat.S_ISREG(info.st_mode):
                        seen[str(path)] = self.file(path, info)
                    else:
                        seen[str(path)] = "special"
                except OSError:
                    continue
        return seen


def walk(top: Path) -> Iterator[Path]:
    """`top` and everything under it, never following links (a link loop is a case here)."""
    if not os.path.lexists(top):
        return
    yield top
    if top.is_dir() and not top.is_symlink():
        for folder, folders, files in os.walk(top, followlinks=False):
            for name in folders + files:
                yield Path(folder) / name


def lost_between(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Inputs that changed or vanished (new files beside them are not a loss)."""
    return sorted(path for path, what in before.items() if after.get(path) != what)


# -- the material -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Material:
    """What the campaign builds once and every case copies from; never damaged itself."""

    root: Path
    data: Path  # a shapes set in COCO layout: 24 + 8 images of 28 px
    long_data: Path  # a larger one for the kill -9 runs
    run: Path  # a trained run folder: latest/ (resumable) and best/
    adapter: Path  # a LoRA adapter of run/best (a run's best/)
    export: Path  # run/best exported to ONNX
    image: Path  # one validation picture

    @property
    def best(self) -> Path:
        return self.run / "best"

    @property
    def latest(self) -> Path:
        return self.run / "latest"

    def places(self, case: Path) -> dict[str, str]:
        """The names a case's arguments may use: {case} is its own folder."""
        return {"case": str(case), "root": str(self.root), "data": str(self.data), "run": str(self.run),
                "best": str(self.best), "latest": str(self.latest), "adapter": str(self.adapter),
                "export": str(self.export), "image": str(self.image)}

    def inputs(self) -> list[Path]:
        return [self.data, self.run, self.adapter.parent, self.export]


def build_material(root: Path, settings: "Settings") -> tuple[Material, list[dict]]:
    """Everything the cases copy from, made offline with the package's own commands; the rows
    of the two that are a surface's good input (training, export): their memory is the bound's base."""
    material = Material(root, root / "shapes", root / "shapes-long", root / "run", root / "lora" / "best",
                        root / "onnx", root / "shapes" / "val2017" / "000000000025.png")
    rows: list[dict] = []

    def step(name: str, surface: str, args: list[str], baseline: bool = False) -> None:
        proc = execute(command(surface) + args, root, root / "logs" / "material" / name, 600, settings.memory_cap_mb,
                       settings.env)
        if proc.exit != 0:
            tail = "\n".join(message_lines(proc.stderr)[-8:])
            raise SystemExit(f"building the material failed at {name} (exit {proc.exit}):\n{tail}")
        if baseline:
            rows.append(measured(Case(f"good input: {name}", surface, args, expect=HANDLE, baseline=True), proc, []))

    log("material: two shapes sets")
    shapes = ["-m", "multimodal.data", "shapes"]
    at_once(lambda: step("shapes", "", shapes + [str(material.data), "--num-train", "24", "--num-val", "8",
                                                 "--image-size", "28"]),
            lambda: step("shapes-long", "", shapes + [str(material.long_data), "--num-train", "40", "--num-val", "4",
                                                      "--image-size", "28"]))
    log("material: a tiny run (train.py)")
    step("a tiny run", "train.py", ["--preset", "shapes", "--data-dir", str(material.data), "--output-dir",
                                    str(material.run), "--epochs", "1", "--diffusion-epochs", "1", "--batch-size", "8",
                                    "--no-sample-every-epoch", *TINY_FLAGS], baseline=True)
    log("material: a LoRA adapter and the ONNX export")
    at_once(lambda: step("an adapter", "train.py", [
        "--preset", "shapes", "--data-dir", str(material.data), "--output-dir", str(material.adapter.parent),
        "--init-from", str(material.best), "--lora-rank", "2", "--max-steps", "2", "--batch-size", "8",
        "--num-workers", "0", "--no-sample-every-epoch"]),
            lambda: step("an export", "export", [str(material.best), str(material.export)], baseline=True))
    for needed in (material.best, material.latest, material.adapter, material.export):
        if not needed.is_dir():
            raise SystemExit(f"building the material failed: {needed} was not written")
    return material, rows


def at_once(*calls: Callable[[], None]) -> None:
    """Run `calls` side by side; the first failure is raised here, once all have ended."""
    failures: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as failure:  # SystemExit too: a step says why the material failed
            failures.append(failure)

    threads = [threading.Thread(target=run, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def command(surface: str) -> list[str]:
    """The command line of a surface ("" for a bare interpreter)."""
    parts = COMMANDS.get(surface, [])
    return [sys.executable] + [str(REPO / part) if part.endswith(".py") else part for part in parts]


# -- preparing a case's inputs ----------------------------------------------------------------
Prepare = Callable[[Path, Material], None]
Damage = Callable[[Path], None]


def copy(source: Path, target: Path) -> Path:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return target


def truncate(name: str, keep: float = 0.5) -> Damage:
    def damage(folder: Path) -> None:
        content = (folder / name).read_bytes()
        (folder / name).write_bytes(content[: int(len(content) * keep)])
    return damage


def flip_last_byte(name: str) -> Damage:
    """A file that still loads but is not the one it was: its last byte (of a weight) changed."""
    def damage(folder: Path) -> None:
        content = bytearray((folder / name).read_bytes())
        content[-1] ^= 0x40
        (folder / name).write_bytes(bytes(content))
    return damage


def replace(name: str, content: bytes | str) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return damage


def edit_json(name: str, edit: Callable[[Any], Any]) -> Damage:
    """Change a JSON file: `edit` changes the value in place (returning None) or returns a new one."""
    def damage(folder: Path) -> None:
        value = json.loads((folder / name).read_text())
        changed = edit(value)
        (folder / name).write_text(json.dumps(value if changed is None else changed))
    return damage


def remove(name: str) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return damage


def folder_instead(name: str) -> Damage:
    def damage(folder: Path) -> None:
        remove(name)(folder)
        (folder / name).mkdir()
    return damage


def link_loop(name: str) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        if os.path.lexists(path):
            remove(name)(folder)
        os.symlink(path.name, path)
    return damage


def read_only(path: Path) -> None:
    """A folder nobody may write in: chattr +i as root (root ignores permissions), else mode 555."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    else:
        path.chmod(0o555)


def release(folder: Path) -> None:
    """Make `folder` (of this campaign or a kept earlier one) removable again."""
    if not folder.is_dir():
        return
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
    for path in walk(folder):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def prepared(*steps: Prepare) -> Prepare:
    def prepare(folder: Path, material: Material) -> None:
        for each in steps:
            each(folder, material)
    return prepare


def damaged_copy(source: Callable[[Material], Path], name: str, damage: tuple[Damage, ...]) -> Prepare:
    """A copy of `source(material)` at {case}/NAME, then damaged by each of `damage` in turn."""
    def prepare(folder: Path, material: Material) -> None:
        target = copy(source(material), folder / name)
        for each in damage:
            each(target)
    return prepare


def checkpoint(*damage: Damage, name: str = "ck") -> Prepare:
    """A copy of the trained checkpoint (run/best) at {case}/NAME, then damaged."""
    return damaged_copy(lambda material: material.best, name, damage)


def resumable(*damage: Damage) -> Prepare:
    """A copy of the run's latest/ as {case}/run/latest, then damaged."""
    return damaged_copy(lambda material: material.latest, "run/latest", damage)


def whole_run() -> Prepare:
    """A copy of the whole run folder at {case}/run (latest/, best/, metrics)."""
    return lambda folder, material: copy(material.run, folder / "run") and None


def data(*damage: Damage, name: str = "data") -> Prepare:
    """A copy of the shapes set (COCO layout) at {case}/NAME, then damaged."""
    return damaged_copy(lambda material: material.data, name, damage)


TRAIN_JSON = "annotations/captions_train2017.json"
VAL_JSON = "annotations/captions_val2017.json"


def coco(edit: Callable[[dict], Any], split: str = TRAIN_JSON) -> Prepare:
    return data(edit_json(split, edit))


def image_folder(metadata: str, content: bytes | str | Callable[[list[str]], bytes | str], images: int = 32,
                 name: str = "data") -> Prepare:
    """An image folder {case}/NAME of the shapes set's pictures (a0.png …) and a metadata file;
    `content` may be built from the pictures' names."""
    def prepare(folder: Path, material: Material) -> None:
        target = folder / name
        target.mkdir(parents=True)
        sources = [path for split in ("train2017", "val2017") for path in sorted((material.data / split).glob("*.png"))]
        names = []
        for index, source in enumerate(sources[:images]):
            shutil.copy2(source, target / f"a{index}.png")
            names.append(f"a{index}.png")
        text = content(names) if callable(content) else content
        (target / metadata).write_bytes(text.encode() if isinstance(text, str) else text)
    return prepare


def jsonl(rows: Callable[[list[str]], list[Any]]) -> Callable[[list[str]], str]:
    return lambda names: "".join(json.dumps(row) + "\n" for row in rows(names))


def captions_of(names: list[str], word: str = "shape") -> list[dict]:
    return [{"file_name": name, "text": f"a {word} number {index}"} for index, name in enumerate(names)]


def csv_text(names: list[str], word: str) -> str:
    return "file_name,text\n" + "".join(f"{name},un {word} numéro {index}\n" for index, name in enumerate(names))


def paired(caption: bytes | str, images: int = 32) -> Prepare:
    """A paired folder: NAME.png beside NAME.txt holding `caption`."""
    def prepare(folder: Path, material: Material) -> None:
        target = folder / "data"
        target.mkdir(parents=True)
        for index, source in enumerate(sorted((material.data / "train2017").glob("*.png"))[:images]):
            shutil.copy2(source, target / f"p{index}.png")
            (target / f"p{index}.txt").write_bytes(caption.encode() if isinstance(caption, str) else caption)
    return prepare


def numbered(lines: int, images: int = 24) -> Prepare:
    """A captions-txt folder: images/1.png … and captions.txt of `lines` lines."""
    def prepare(folder: Path, material: Material) -> None:
        target = folder / "data" / "images"
        target.mkdir(parents=True)
        for index, source in enumerate(sorted((material.data / "train2017").glob("*.png"))[:images], start=1):
            shutil.copy2(source, target / f"{index}.png")
        (folder / "data" / "captions.txt").write_text("".join(f"a shape number {i}\n" for i in range(lines)))
    return prepare


def gone_base(record: dict) -> None:
    """base_checkpoint.json's record, pointing to a base that is not there."""
    record.update(base_checkpoint="/nonexistent/base")


def shards(cut: bool = False) -> Prepare:
    """{case}/data: one WebDataset shard of the shapes set's pictures (KEY.png + KEY.txt); `cut`
    ends it halfway through."""
    def prepare(folder: Path, material: Material) -> None:
        import io
        import tarfile

        target = folder / "data"
        target.mkdir(parents=True)
        with tarfile.open(target / "train-000000.tar", "w") as shard:
            for index, source in enumerate(sorted((material.data / "train2017").glob("*.png"))):
                for name, content in ((f"{index:06d}.png", source.read_bytes()),
                                      (f"{index:06d}.txt", f"a shape number {index}".encode())):
                    entry = tarfile.TarInfo(name)
                    entry.size = len(content)
                    shard.addfile(entry, io.BytesIO(content))
        if cut:
            truncate("train-000000.tar")(target)
    return prepare


def loop_at(name: str) -> Prepare:
    """{case}/NAME, a link to itself."""
    def prepare(folder: Path, material: Material) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        link_loop(Path(name).name)((folder / name).parent)
    return prepare


def alias(name: str, target: str) -> Prepare:
    """{case}/NAME, a link to {case}/TARGET: an output that names an input under another name."""
    return made(lambda folder: os.symlink(folder / target, folder / name))


def adapter(*damage: Damage, own_base: bool = False) -> Prepare:
    """A copy of the adapter at {case}/adapter; with `own_base`, of its base too ({case}/base),
    the adapter pointing to that copy."""
    def prepare(folder: Path, material: Material) -> None:
        target = copy(material.adapter, folder / "adapter")
        if own_base:
            base = copy(material.best, folder / "base")
            edit_json("base_checkpoint.json", lambda record: record.update(base_checkpoint=str(base)))(target)
        for each in damage:
            each(target)
    return prepare


def export_copy(*damage: Damage) -> Prepare:
    def prepare(folder: Path, material: Material) -> None:
        target = copy(material.export, folder / "onnx")
        for each in damage:
            each(target)
    return prepare


def file(name: str, make: Callable[[Path, Material], None]) -> Prepare:
    def prepare(folder: Path, material: Material) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        make(folder / name, material)
    return prepare


def made(action: Callable[[Path], None]) -> Prepare:
    return lambda folder, material: action(folder)


def picture(size: tuple[int, int], mode: str = "RGB") -> Callable[[Path, Material], None]:
    """A picture of `size` (width, height) in `mode`, its format from the file's extension: noise
    when it is small, black when it is huge (a few bytes of PNG for millions of pixels)."""
    def make(path: Path, material: Material) -> None:
        import numpy as np
        from PIL import Image

        if size[0] * size[1] <= 1 << 16:
            noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            image = Image.fromarray(noise).convert(mode)
        else:
            image = Image.new(mode, size)
        image.save(path)
    return make


def frames(path: Path, material: Material) -> None:
    from PIL import Image

    shots = [Image.new("RGB", (40, 40), colour) for colour in ("red", "green", "blue")]
    shots[0].save(path, save_all=True, append_images=shots[1:], duration=100, loop=0)


def png_claiming(width: int, height: int) -> Callable[[Path, Material], None]:
    """A PNG whose header claims width × height pixels; its data is a few bytes (cut short)."""
    def make(path: Path, material: Material) -> None:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                         + chunk(b"IEND", b""))
    return make


def bytes_of(content: bytes | str) -> Callable[[Path, Material], None]:
    return lambda path, material: path.write_bytes(content.encode() if isinstance(content, str) else content)


def fifo(path: Path, material: Material) -> None:
    os.mkfifo(path)


def cut_picture(path: Path, material: Material) -> None:
    path.write_bytes(material.image.read_bytes()[:60])


def the_image(path: Path, material: Material) -> None:
    shutil.copy2(material.image, path)


def safetensors_claiming(header_bytes: int) -> bytes:
    """A safetensors file whose first 8 bytes claim a header of that many bytes."""
    return struct.pack("<Q", header_bytes) + b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'


class Unpickled:
    """A pickle that writes a file when it is loaded: a checkpoint must never be unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def pickled_checkpoint(folder: Path, material: Material) -> None:
    import pickle

    target = copy(material.best, folder / "ck")
    (target / "model.safetensors").unlink()
    (target / "pytorch_model.bin").write_bytes(pickle.dumps(Unpickled(str(folder / "UNPICKLED"))))


# -- checking an output is sensible (exit 0) ------------------------------------------------------
Sensible = Callable[[Path, str], "str | None"]


def pictures(pattern: str, count: int = 1) -> Sensible:
    """At least `count` files matching `pattern` under the case folder, each a picture that is not flat."""
    def check(folder: Path, stdout: str) -> str | None:
        from PIL import Image
        import numpy as np

        found = sorted(folder.glob(pattern))
        if len(found) < count:
            return f"{len(found)} pictures matching {pattern}, {count} expected"
        for path in found[:8]:
            values = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
            if values.std() < 2:
                return f"{path.name} is flat (every pixel {values.mean():.0f})"
        return None
    return check


def captions_printed(count: int = 1) -> Sensible:
    def check(folder: Path, stdout: str) -> str | None:
        lines = [line for line in stdout.splitlines() if ": " in line and line.split(": ", 1)[1].strip()]
        return None if len(lines) >= count else f"{len(lines)} captions printed, {count} expected"
    return check


def files_there(*patterns: str) -> Sensible:
    def check(folder: Path, stdout: str) -> str | None:
        missing = [pattern for pattern in patterns if not list(folder.glob(pattern))]
        return f"nothing matches {', '.join(missing)}" if missing else None
    return check


def text_in_output(pattern: str, word: str) -> Sensible:
    """Some file matching `pattern` holds `word` and no U+FFFD (a caption read in the right encoding)."""
    def check(folder: Path, stdout: str) -> str | None:
        texts = [readable(path) for path in folder.glob(pattern) if path.is_file()]
        if not texts:
            return f"nothing matches {pattern}"
        if any("\ufffd" in text for text in texts):
            return "captions hold U+FFFD: the file was read in the wrong encoding"
        if not any(word in text for text in texts):
            return f"no caption holds {word!r} (read in the wrong encoding?)"
        return None
    return check


def readable(path: Path) -> str:
    """A text file as a person reads it: JSON lines with their escapes (\\u0153) decoded."""
    text = path.read_bytes().decode("utf-8", "replace")
    if path.suffix != ".jsonl":
        return text
    return "\n".join(json.dumps(json.loads(line), ensure_ascii=False) for line in text.splitlines() if line.strip())


def no_file(name: str, why: str) -> Sensible:
    return lambda folder, stdout: why if (folder / name).exists() else None


# -- the cases --------------------------------------------------------------------------------
@dataclass
class Case:
    """One input tried on one surface. `args` follow the surface's command; {case} names the
    case's own folder, {best}, {data}, … the material (Material.places). `watch` lists inputs
    that must come out unchanged (the material always is checked too)."""

    name: str
    surface: str
    args: list[str]
    prepare: Prepare | None = None
    watch: tuple[str, ...] = ()
    expect: str = REFUSE
    sensible: Sensible | None = None  # exit 0: None when the output is right, else what is wrong
    forbid: Sensible | None = None  # whatever the exit: None, or what the process must never have done
    timeout: float | None = None
    quick: bool = False
    baseline: bool = False  # the surface's good input: its memory is the bound's base, not a bad input


T2I = ["--checkpoint", "{best}", "--steps", "2", "--device", "cpu", "--quiet"]
I2T = ["--checkpoint", "{best}", "--device", "cpu", "--quiet"]
EVAL = ["--checkpoint", "{best}", "--limit", "4", "--steps", "2", "--device", "cpu"]
TRAIN_RUN = ["--preset", "shapes", "--data-dir", "{data}", "--output-dir", "{case}/run", "--epochs", "1",
             "--diffusion-epochs", "0", "--max-steps", "1", "--batch-size", "8", "--no-sample-every-epoch",
             "--num-workers", "0"]
TRAIN = [*TRAIN_RUN, *TINY_FLAGS]  # a fresh run of the tiny model; TRAIN_RUN alone with --init-from (its model)
OWN_DATA = ["--preset", "coco"]  # data the user brings: a missing folder is not where a built-in set is drawn
GIANT_CAPTION = "a red circle " * 200_000  # 2.6 MB
LONG_PROMPT = "a red circle on the left " * 4_000  # 100 kB: below the system's limit of one argument


def train_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "train.py", [*TRAIN, *args], **kw)  # noqa: E731
    tune = lambda name, args, **kw: Case(name, "train.py", [*TRAIN_RUN, *args], **kw)  # noqa: E731
    run_watch = ("{case}/run",)
    return [
        c("--batch-size abc", ["--batch-size", "abc"], quick=True),
        c("--batch-size 0", ["--batch-size", "0"]),
        c("--batch-size 10**12", ["--batch-size", "1000000000000"], expect=EITHER, sensible=files_there("run/latest")),
        c("--lr nan", ["--lr", "nan"], quick=True),
        c("--lr inf", ["--lr", "inf"]),
        c("--lr -1", ["--lr", "-1"]),
        c("--epochs -3", ["--epochs", "-3"]),
        c("--epochs 10**30 (--max-steps 1)", ["--epochs", "1" + "0" * 30], expect=EITHER,
          sensible=files_there("run/latest")),
        c("--seed beyond 64 bits", ["--seed", str(2**64 + 1)]),
        c("--seed -1", ["--seed", "-1"]),
        c("--image-size 100 (not 7·2^k)", ["--image-size", "100"]),
        c("--image-size 7·2^20", ["--image-size", str(7 * 2**20)]),
        c("--bach-size (a typo)", ["--bach-size", "8"]),
        c("--val-fraction 1.5", ["--val-fraction", "1.5"]),
        c("--warmup-epochs nan", ["--warmup-epochs", "nan"]),
        c("--ema-decay 2", ["--ema-decay", "2"]),
        c("--num-workers -2", ["--num-workers", "-2"]),
        c("--max-steps 0", ["--max-steps", "0"]),
        c("--save-every 0", ["--save-every", "0"]),
        c("--keep-last -1", ["--keep-last", "-1"]),
        c("--attention-resolutions 5,abc", ["--attention-resolutions", "5,abc"]),
        c("--caption-heads 3 (width 32)", ["--caption-heads", "3"]),
        c("--unet-heads 0", ["--unet-heads", "0"]),
        c("--embed-dim -32", ["--embed-dim", "-32"]),
        c("--cond-drop 1.5", ["--cond-drop", "1.5"]),
        c("--device cuda on a machine without one", ["--device", "cuda"]),
        c("--text-encoder a missing folder", ["--text-encoder", "{case}/no-bert"]),
        c("--lora-rank without --init-from", ["--lora-rank", "4"]),
        c("--replay-images without --init-from", ["--replay-images", "4"]),
        c("--data-format webdataset on a COCO folder", ["--data-format", "webdataset"]),
        c("--data-dir missing", [*OWN_DATA, "--data-dir", "{case}/nothing-here"], quick=True),
        c("--data-dir a picture", [*OWN_DATA, "--data-dir", "{image}"]),
        c("--data-dir an empty folder", [*OWN_DATA, "--data-dir", "{case}/empty"],
          prepare=made(lambda f: (f / "empty").mkdir())),
        c("--data-dir a link loop", [*OWN_DATA, "--data-dir", "{case}/loop"],
          prepare=loop_at("loop")),
        c("COCO: a caption that is a number", ["--data-dir", "{case}/data"],
          prepare=coco(lambda d: d["annotations"][0].update(caption=7)), watch=("{case}/data",), quick=True),
        c("COCO: an image without file_name", ["--data-dir", "{case}/data"],
          prepare=coco(lambda d: d["images"][0].pop("file_name")), watch=("{case}/data",)),
        c("COCO: annotation file cut short", ["--data-dir", "{case}/data"], prepare=data(truncate(TRAIN_JSON)),
          watch=("{case}/data",)),
        c("COCO: a 2.6 MB caption", ["--data-dir", "{case}/data"], expect=HANDLE, sensible=files_there("run/latest"),
          prepare=coco(lambda d: d["annotations"][0].update(caption=GIANT_CAPTION)), watch=("{case}/data",)),
        c("image folder: file_name ../../x.png", ["--data-dir", "{case}/data"], watch=("{case}/data",),
          prepare=image_folder("metadata.jsonl", jsonl(lambda names: captions_of(names)
                                                       + [{"file_name": "../../escape.png", "text": "outside"}]))),
        c("image folder: every image unreadable", ["--data-dir", "{case}/data"], watch=("{case}/data",),
          prepare=prepared(image_folder("metadata.jsonl", jsonl(captions_of)),
                           made(lambda f: [p.write_bytes(b"not a picture") for p in (f / "data").glob("*.png")]))),
        c("--output-dir a file", ["--output-dir", "{image}"]),
        c("--output-dir in a read-only folder", ["--output-dir", "{case}/locked/run"],
          prepare=made(lambda f: read_only(f / "locked")), quick=True),
        c("--output-dir under a file", ["--output-dir", "{case}/note.txt/run"],
          prepare=made(lambda f: (f / "note.txt").write_text("a file"))),
        c("--output-dir = --data-dir, --overwrite", ["--data-dir", "{case}/data", "--output-dir", "{case}/data",
                                                     "--overwrite"],
          prepare=data(), watch=("{case}/data",), quick=True),
        c("--output-dir inside --data-dir, --overwrite", ["--data-dir", "{case}/data", "--output-dir",
                                                          "{case}/data/run", "--overwrite"],
          prepare=data(), watch=("{case}/data",)),
        tune("--init-from RUN --lora-rank 2 --output-dir RUN --overwrite", [
            "--init-from", "{case}/run/best", "--lora-rank", "2", "--output-dir", "{case}/run", "--overwrite"],
          prepare=whole_run(), watch=run_watch, quick=True),
        tune("--init-from RUN --output-dir RUN/best --overwrite", [
            "--init-from", "{case}/run/best", "--output-dir", "{case}/run/best", "--overwrite"],
          prepare=whole_run(), watch=run_watch),
        tune("--output-dir = --replay-data, --overwrite", [
            "--init-from", "{best}", "--replay-images", "4", "--replay-data", "{case}/data", "--output-dir",
            "{case}/data", "--overwrite"], prepare=data(), watch=("{case}/data",)),
        c("--data-dir with spaces and unicode", ["--data-dir", "{case}/my data/ünï ☃"], expect=HANDLE,
          prepare=data(name="my data/ünï ☃"), sensible=files_there("run/latest/model.safetensors")),
        c("--output-dir a link to --data-dir, --overwrite", ["--data-dir", "{case}/data", "--output-dir",
                                                             "{case}/alias", "--overwrite"],
          prepare=prepared(data(), alias("alias", "data")), watch=("{case}/data",)),
        c("a 1×24,000,000 px picture in the data set", ["--data-dir", "{case}/data"], expect=EITHER,
          sensible=files_there("run/latest/model.safetensors"), watch=("{case}/data",),
          prepare=prepared(image_folder("metadata.jsonl", jsonl(captions_of)),
                           file("data/a0.png", picture((24_000_000, 1), "L")))),
        c("an existing run, neither --resume nor --overwrite", ["--output-dir", "{case}/run"], prepare=whole_run(),
          watch=run_watch),
        c("--resume with nothing to resume", ["--resume", "--output-dir", "{case}/empty"],
          prepare=made(lambda f: (f / "empty").mkdir())),
        c("--resume: trainer_state.json cut short", ["--resume"], prepare=resumable(truncate("trainer_state.json")),
          watch=run_watch, quick=True),
        c("--resume: training_state.safetensors cut short", ["--resume"],
          prepare=resumable(truncate("training_state.safetensors")), watch=run_watch),
        c("--resume: trainer_state.json is binary", ["--resume"],
          prepare=resumable(replace("trainer_state.json", os.urandom(512))), watch=run_watch),
        c("--resume: latest/config.json is []", ["--resume"], prepare=resumable(replace("config.json", "[]")),
          expect=EITHER),
        c("--resume --unet-width 64 (the run has 32)", ["--resume", "--unet-width", "64"], prepare=resumable(),
          watch=run_watch),
        c("--resume --batch-size 4 (the run had 8)", ["--resume", "--batch-size", "4"], prepare=resumable(),
          watch=run_watch, expect=EITHER),
        c("--resume: model.safetensors cut short", ["--resume"], prepare=resumable(truncate("model.safetensors")),
          watch=run_watch),
        c("--resume: latest/ a link loop", ["--resume"], prepare=loop_at("run/latest")),
        c("--resume: latest/ is a file", ["--resume"],
          prepare=made(lambda f: ((f / "run").mkdir(), (f / "run" / "latest").write_text("x")) and None)),
        tune("--init-from a missing folder", ["--init-from", "{case}/nothing"]),
        tune("--init-from: model.safetensors cut short", ["--init-from", "{case}/ck"],
             prepare=checkpoint(truncate("model.safetensors")), watch=("{case}/ck",)),
        tune("--init-from: config.json binary", ["--init-from", "{case}/ck"],
             prepare=checkpoint(replace("config.json", os.urandom(128))), watch=("{case}/ck",)),
        tune("--init-from the ONNX export", ["--init-from", "{export}"]),
        tune("--init-from an adapter", ["--init-from", "{adapter}"], expect=EITHER,
             sensible=files_there("run/latest")),
        tune("--lora-rank 10**6", ["--init-from", "{best}", "--lora-rank", "1000000"]),
        c("--output-dir with spaces and unicode", ["--output-dir", "{case}/my runs/ünïcødé ☃ run"], expect=HANDLE,
          sensible=files_there("my runs/*/latest/model.safetensors"), quick=True),
    ]


def t2i_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "generate_t2i.py", [*T2I, *args], **kw)  # noqa: E731
    ck = lambda *damage: dict(prepare=checkpoint(*damage), watch=("{case}/ck",))  # noqa: E731
    out = ["--output", "{case}/x.png"]
    ok = pictures("x.png")
    return [
        Case("good input: a prompt", "generate_t2i.py", [*T2I, "a red circle", *out], expect=HANDLE, sensible=ok,
             baseline=True, quick=True),
        c("an empty prompt", [""], quick=True),
        c("a prompt of spaces", ["   \t "]),
        c("--steps 0", ["a red circle", "--steps", "0"]),
        c("--steps -5", ["a red circle", "--steps", "-5"]),
        c("--steps abc", ["a red circle", "--steps", "abc"]),
        c("--steps 10**9", ["a red circle", "--steps", "1000000000", *out], expect=EITHER, sensible=ok),
        c("--guidance-scale inf", ["a red circle", "--guidance-scale", "inf", *out], quick=True),
        c("--guidance-scale nan", ["a red circle", "--guidance-scale", "nan", *out]),
        c("--guidance-scale 1e308", ["a red circle", "--guidance-scale", "1e308", *out], expect=EITHER, sensible=ok),
        c("--eta inf", ["a red circle", "--eta", "inf", *out]),
        c("--eta -1", ["a red circle", "--eta", "-1", *out]),
        c("--guidance-rescale 2", ["a red circle", "--guidance-rescale", "2", *out]),
        c("--num-samples 0", ["a red circle", "--num-samples", "0"]),
        c("--num-samples -1", ["a red circle", "--num-samples", "-1"]),
        Case("--num-samples 10000 --no-diffusion", "generate_t2i.py", [
            "a red circle", "--checkpoint", "{best}", "--quiet", "--num-samples", "10000", "--no-diffusion", "--output",
            "{case}/many/"], expect=EITHER, sensible=pictures("many/*.png", 10000)),
        c("--candidates 0", ["a red circle", "--candidates", "0"]),
        c("--candidates 10**6", ["a red circle", "--candidates", "1000000", *out], expect=EITHER, sensible=ok),
        c("--seed beyond 64 bits", ["a red circle", "--seed", str(2**64 + 1)], quick=True),
        c("--seed 1e30", ["a red circle", "--seed", "1e30"]),
        c("--sampler euler", ["a red circle", "--sampler", "euler"]),
        c("--threads 0", ["a red circle", "--threads", "0", *out]),
        c("--precision fp16 on a CPU", ["a red circle", "--precision", "fp16", *out], expect=EITHER, sensible=ok),
        c("--output x.gif", ["a red circle", "--output", "{case}/x.gif"]),
        c("--output x.txt", ["a red circle", "--output", "{case}/x.txt"]),
        c("--output in a read-only folder", ["a red circle", "--output", "{case}/locked/x.png"],
          prepare=made(lambda f: read_only(f / "locked")), quick=True),
        c("--output under a file", ["a red circle", "--output", "{case}/note.txt/x.png"],
          prepare=made(lambda f: (f / "note.txt").write_text("a file"))),
        c("--output an existing picture, no --overwrite", ["a red circle", *out], prepare=file("x.png", the_image),
          watch=("{case}/x.png",)),
        c("--output the checkpoint's model.safetensors", ["a red circle", "--output", "{case}/ck/model.safetensors",
                                                          "--overwrite"], **ck()),
        c("--output the checkpoint's config.json", ["a red circle", "--output", "{case}/ck/config.json",
                                                    "--overwrite"], **ck()),
        c("--output a link to the checkpoint's model.safetensors, --overwrite", [
            "a red circle", "--output", "{case}/x.png", "--overwrite"],
          prepare=prepared(checkpoint(), alias("x.png", "ck/model.safetensors")), watch=("{case}/ck",), expect=EITHER),
        c("a 100 kB prompt", [LONG_PROMPT, *out], expect=HANDLE, sensible=ok),
        c("a prompt of emoji, RTL and control characters", ["🔴 دائرة حمراء \x1b[31m\u202e circle", *out],
          expect=HANDLE, sensible=ok),
        c("--output with spaces and unicode", ["a red circle", "--output", "{case}/my pictures/ünï ☃.png"],
          expect=HANDLE, sensible=pictures("my pictures/*.png")),
        c("--checkpoint missing", ["a red circle", "--checkpoint", "{case}/nothing"], quick=True),
        c("--checkpoint a picture", ["a red circle", "--checkpoint", "{image}"]),
        c("--checkpoint a link loop", ["a red circle", "--checkpoint", "{case}/loop"],
          prepare=loop_at("loop")),
        c("--checkpoint the ONNX export", ["a red circle", "--checkpoint", "{export}"]),
        c("model.safetensors cut short", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(truncate("model.safetensors"))),
        c("model.safetensors empty", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(replace("model.safetensors", b""))),
        c("model.safetensors claims a 1 TB header", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(replace("model.safetensors", safetensors_claiming(1 << 40)))),
        c("model.safetensors is a folder", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(folder_instead("model.safetensors"))),
        c("model.safetensors a link to itself", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(link_loop("model.safetensors"))),
        c("only a pickled pytorch_model.bin", ["a red circle", "--checkpoint", "{case}/ck"],
          prepare=pickled_checkpoint, forbid=no_file("UNPICKLED", "the pickle was loaded (it ran code)")),
        c("config.json binary", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(replace("config.json", os.urandom(256))), quick=True),
        c("config.json is []", ["a red circle", "--checkpoint", "{case}/ck"], **ck(replace("config.json", "[]"))),
        c("config.json negative UNet heads", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(edit_json("config.json", lambda c: c.update(unet_heads=-2)))),
        c("config.json zero caption heads", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(edit_json("config.json", lambda c: c.update(caption_heads=0)))),
        c("config.json asks for a giant UNet", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(edit_json("config.json", lambda c: c.update(unet_width=1 << 20)))),
        c("config.json image_size a string", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(edit_json("config.json", lambda c: c.update(image_size="28")))),
        c("config.json an unknown field", ["a red circle", "--checkpoint", "{case}/ck", *out],
          **ck(edit_json("config.json", lambda c: c.update(colour_of_the_sky="blue"))), expect=EITHER, sensible=ok),
        c("tokenizer.json corrupt", ["a red circle", "--checkpoint", "{case}/ck"],
          **ck(replace("tokenizer.json", "{\"version\": ")), quick=True),
        c("tokenizer_config.json binary", ["a red circle", "--checkpoint", "{case}/ck", *out],
          **ck(replace("tokenizer_config.json", os.urandom(64)))),
        c("tokenizer.json missing", ["a red circle", "--checkpoint", "{case}/ck", *out],
          **ck(remove("tokenizer.json")), expect=EITHER, sensible=ok),
        c("--adapter missing", ["a red circle", "--adapter", "{case}/nothing"]),
        c("--adapter: adapter_model.safetensors cut short", ["a red circle", "--adapter", "{case}/adapter"],
          prepare=adapter(truncate("adapter_model.safetensors")), watch=("{case}/adapter",), quick=True),
        Case("--adapter: its base is gone (no --checkpoint)", "generate_t2i.py",
             ["a red circle", "--steps", "2", "--quiet", "--adapter", "{case}/adapter"],
             prepare=adapter(edit_json("base_checkpoint.json", gone_base))),
        c("--adapter a full checkpoint", ["a red circle", "--adapter", "{best}"]),
    ]


def i2t_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "generate_i2t.py", [*I2T, *args], **kw)  # noqa: E731
    one = lambda name, make, **kw: c(  # noqa: E731  (a picture named by the case's first word)
        name, ["{case}/" + name.split(" ")[0]], prepare=file(name.split(" ")[0], make), **kw)
    ok = captions_printed()
    return [
        Case("good input: a picture", "generate_i2t.py", [*I2T, "{image}"], expect=HANDLE, sensible=ok, baseline=True,
             quick=True),
        c("a missing picture", ["{case}/nothing.png"], quick=True),
        one("notes.png (text)", bytes_of("not a picture at all")),
        one("empty.png (0 bytes)", bytes_of(b"")),
        one("cut.png (cut short)", cut_picture, quick=True),
        one("wide.png (1×200,000 px, 1 kB)", picture((200_000, 1), "L"), expect=EITHER, sensible=ok, quick=True),
        one("wider.png (1×24,000,000 px)", picture((24_000_000, 1), "L"), expect=EITHER, sensible=ok),
        one("bomb.png (header: 30,000×30,000 px)", png_claiming(30_000, 30_000)),
        one("big.png (12,000×12,000 px)", picture((12_000, 12_000), "L"), expect=EITHER, sensible=ok),
        one("tiny.png (1×1 px)", picture((1, 1)), expect=HANDLE, sensible=ok),
        one("cmyk.jpg (CMYK JPEG)", picture((40, 40), "CMYK"), expect=HANDLE, sensible=ok),
        one("deep.png (16-bit grey)", picture((40, 40), "I;16"), expect=HANDLE, sensible=ok),
        one("clear.png (RGBA)", picture((40, 40), "RGBA"), expect=HANDLE, sensible=ok),
        one("moving.gif (3 frames)", frames, expect=HANDLE, sensible=ok),
        one("picture.svg (SVG)", bytes_of('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')),
        c("a folder", ["{case}/folder"], prepare=made(lambda f: (f / "folder").mkdir())),
        c("a link loop", ["{case}/loop.png"], prepare=loop_at("loop.png")),
        c("a named pipe (FIFO)", ["{case}/pipe.png"], prepare=file("pipe.png", fifo), timeout=60),
        c("/dev/zero", ["/dev/zero"], timeout=60),
        c("/dev/urandom", ["/dev/urandom"], timeout=60),
        c("a path with spaces and unicode", ["{case}/my pictures/ünï ☃.png"], expect=HANDLE, sensible=ok,
          prepare=file("my pictures/ünï ☃.png", the_image)),
        c("200 pictures at once", ["{image}"] * 200, expect=HANDLE, sensible=captions_printed(200)),
        c("--num-beams 0", ["{image}", "--num-beams", "0"]),
        c("--num-beams 5000", ["{image}", "--num-beams", "5000"], expect=EITHER, sensible=ok),
        c("--temperature inf", ["{image}", "--temperature", "inf"], quick=True),
        c("--temperature nan", ["{image}", "--temperature", "nan"]),
        c("--temperature -1", ["{image}", "--temperature", "-1"]),
        c("--top-k -5", ["{image}", "--top-k", "-5"]),
        c("--top-p 0", ["{image}", "--top-p", "0"]),
        c("--top-p nan", ["{image}", "--top-p", "nan"]),
        c("--repetition-penalty 0", ["{image}", "--repetition-penalty", "0"]),
        c("--repetition-penalty inf", ["{image}", "--repetition-penalty", "inf"]),
        c("--max-new-tokens 0", ["{image}", "--max-new-tokens", "0"]),
        c("--max-new-tokens 10**9", ["{image}", "--max-new-tokens", "1000000000"], expect=EITHER, sensible=ok),
        c("--num-captions 10**6", ["{image}", "--num-captions", "1000000", "--top-p", "0.9"], expect=EITHER,
          sensible=ok),
        c("--checkpoint an adapter", ["{image}", "--checkpoint", "{adapter}"], expect=EITHER, sensible=ok),
        c("--checkpoint the data folder", ["{image}", "--checkpoint", "{data}"]),
    ]


def eval_cases() -> list[Case]:
    out = ["--output", "{case}/e.json"]
    c = lambda name, args, **kw: Case(name, "evaluate.py", [*EVAL, *out, *args], **kw)  # noqa: E731
    return [
        Case("good input: --limit 4", "evaluate.py", [*EVAL, "--output", "{case}/e.json"], expect=HANDLE,
             sensible=files_there("e.json"), baseline=True, quick=True),
        c("--limit 0", ["--limit", "0"]),
        c("--limit -1", ["--limit", "-1"]),
        c("--batch-size 0", ["--batch-size", "0"]),
        c("--steps nan", ["--steps", "nan"]),
        c("--output in a read-only folder", ["--output", "{case}/locked/e.json"],
          prepare=made(lambda f: read_only(f / "locked")), quick=True),
        c("--output a folder", ["--output", "{case}"]),
        c("--output the checkpoint's model.safetensors", ["--checkpoint", "{case}/ck", "--output",
                                                          "{case}/ck/model.safetensors"],
          prepare=checkpoint(), watch=("{case}/ck",), quick=True),
        c("--output a link to the checkpoint's config.json", ["--checkpoint", "{case}/ck", "--output", "{case}/e.json"],
          prepare=prepared(checkpoint(), alias("e.json", "ck/config.json")), watch=("{case}/ck",), expect=EITHER),
        c("--data-dir: a 1×200,000 px validation picture", ["--data-dir", "{case}/data"], expect=EITHER,
          sensible=files_there("e.json"), watch=("{case}/data",),
          prepare=data(lambda d: picture((200_000, 1), "L")(d / "val2017" / "000000000025.png", None))),
        c("--sheet over a picture of the data set", ["--data-dir", "{case}/data", "--sheet",
                                                     "{case}/data/val2017/000000000025.png"],
          prepare=data(), watch=("{case}/data",)),
        c("--sheet in a read-only folder", ["--sheet", "{case}/locked/s.png"],
          prepare=made(lambda f: read_only(f / "locked"))),
        c("--data-dir missing", ["--data-dir", "{case}/nothing"]),
        c("--data-dir: a caption that is null", ["--data-dir", "{case}/data"],
          prepare=coco(lambda d: d["annotations"][0].update(caption=None), VAL_JSON), watch=("{case}/data",)),
        c("--data-dir: duplicate image ids", ["--data-dir", "{case}/data"], expect=EITHER,
          sensible=files_there("e.json"),
          prepare=coco(lambda d: d["images"].append(dict(d["images"][0], file_name=d["images"][1]["file_name"])),
                       VAL_JSON), watch=("{case}/data",)),
        c("--data-dir: no validation images", ["--data-dir", "{case}/data"],
          prepare=coco(lambda d: d.update(images=[], annotations=[]), VAL_JSON), watch=("{case}/data",)),
        c("--checkpoint without its trainer state or --data-dir", ["--checkpoint", "{case}/ck"],
          prepare=checkpoint(remove("trainer_state.json")), watch=("{case}/ck",), expect=EITHER,
          sensible=files_there("e.json")),
        c("--checkpoint: model.safetensors cut short", ["--checkpoint", "{case}/ck"],
          prepare=checkpoint(truncate("model.safetensors")), watch=("{case}/ck",)),
    ]


def check_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "data check", args, **kw)  # noqa: E731
    here = ["{case}/data"]
    watched = dict(watch=("{case}/data",))
    coco_case = lambda name, edit, **kw: c(name, here, prepare=coco(edit), **watched, **kw)  # noqa: E731
    folder = lambda name, metadata, content, **kw: c(name, here, prepare=image_folder(metadata, content),  # noqa: E731
                                                     **watched, **kw)
    return [
        Case("good input: the shapes set", "data check", ["{data}"], expect=HANDLE, baseline=True, quick=True),
        c("a missing folder", ["{case}/nothing"], quick=True),
        c("an empty folder", ["{case}/empty"], prepare=made(lambda f: (f / "empty").mkdir())),
        c("a link loop", ["{case}/loop"], prepare=loop_at("loop")),
        c("--val-fraction nan", ["{data}", "--val-fraction", "nan"]),
        c("--val-fraction 2", ["{data}", "--val-fraction", "2"]),
        coco_case("COCO: a caption that is a number", lambda d: d["annotations"][0].update(caption=7), quick=True),
        coco_case("COCO: a caption that is null", lambda d: d["annotations"][0].update(caption=None)),
        coco_case("COCO: an image without file_name", lambda d: d["images"][0].pop("file_name")),
        coco_case("COCO: an image id that is a word", lambda d: d["images"][0].update(id="abc")),
        coco_case("COCO: a file_name that is a number", lambda d: d["images"][0].update(file_name=12)),
        coco_case("COCO: duplicate image ids", lambda d: d["images"].append(dict(d["images"][0])), expect=EITHER),
        coco_case("COCO: the file is a JSON list", lambda d: []),
        coco_case("COCO: file_name ../../../etc/passwd",
                  lambda d: d["images"][0].update(file_name="../../../etc/passwd")),
        c("COCO: annotation file cut short", here, prepare=data(truncate(TRAIN_JSON)), **watched),
        c("COCO: JSON nested 100,000 deep", here, prepare=data(replace(TRAIN_JSON, "[" * 100_000 + "]" * 100_000)),
          **watched),
        c("COCO: annotations/ is a file", here, prepare=data(remove("annotations"), replace("annotations", "x")),
          **watched),
        folder("metadata.jsonl: an absolute file_name", "metadata.jsonl",
               jsonl(lambda names: captions_of(names) + [{"file_name": "/etc/hostname", "text": "outside"}]),
               quick=True),
        folder("metadata.jsonl: file_name ../x.png", "metadata.jsonl",
               jsonl(lambda names: captions_of(names) + [{"file_name": "../x.png", "text": "outside"}])),
        folder("metadata.jsonl: a line that is not JSON", "metadata.jsonl",
               lambda names: jsonl(captions_of)(names) + "{not json\n"),
        folder("metadata.jsonl: no text column", "metadata.jsonl",
               jsonl(lambda names: [{"file_name": name, "caption": "a shape"} for name in names])),
        folder("metadata.jsonl: text is a number", "metadata.jsonl",
               jsonl(lambda names: [{"file_name": name, "text": 5} for name in names])),
        folder("metadata.jsonl: a 2.6 MB caption", "metadata.jsonl",
               jsonl(lambda names: captions_of(names) + [{"file_name": names[0], "text": GIANT_CAPTION}]),
               expect=HANDLE),
        c("metadata.jsonl: every image unreadable", here, **watched, prepare=prepared(
            image_folder("metadata.jsonl", jsonl(captions_of)),
            made(lambda f: [p.write_bytes(b"not a picture") for p in (f / "data").glob("*.png")]))),
        folder("metadata.csv: Latin-1", "metadata.csv", lambda names: csv_text(names, "cœur").encode("cp1252"),
               expect=EITHER),
        folder("metadata.csv: UTF-16", "metadata.csv", lambda names: csv_text(names, "cœur").encode("utf-16"),
               expect=HANDLE),
        folder("metadata.csv: UTF-8 with a byte-order mark", "metadata.csv",
               lambda names: csv_text(names, "cœur").encode("utf-8-sig"), expect=HANDLE, quick=True),
        folder("metadata.csv: NUL bytes", "metadata.csv", lambda names: csv_text(names, "a\0b").encode()),
        folder("metadata.csv: an unclosed quote", "metadata.csv",
               lambda names: csv_text(names, "cœur").replace(",un", ',"un', 1)),
        c("paired: captions that are binary", here, prepare=paired(os.urandom(64) + b"\xff\xfe")),
        c("webdataset: a shard cut short", here, prepare=shards(cut=True), expect=EITHER),
        c("parquet: a file of random bytes", here, prepare=file("data/train-00000-of-00001.parquet",
                                                                bytes_of(os.urandom(4096)))),
        c("image folder: a 1×24,000,000 px picture", here, expect=EITHER, prepare=prepared(
            image_folder("metadata.jsonl", jsonl(captions_of)), file("data/a0.png", picture((24_000_000, 1), "L")))),
        c("captions.txt: fewer lines than images", here, prepare=numbered(lines=3), expect=EITHER),
        c("a picture that is a link loop", here, prepare=prepared(
            image_folder("metadata.jsonl", jsonl(captions_of)), made(lambda f: link_loop("a0.png")(f / "data"))),
          expect=EITHER),
    ]


def convert_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "data convert", args, **kw)  # noqa: E731
    to = ["--to", "imagefolder"]
    return [
        Case("good input: the shapes set to an image folder", "data convert", ["{data}", "{case}/out", *to],
             expect=HANDLE, sensible=files_there("out/*"), baseline=True, quick=True),
        c("DST exists", ["{data}", "{case}/out", *to], prepare=made(lambda f: (f / "out").mkdir())),
        c("DST = SRC", ["{case}/data", "{case}/data", *to], prepare=data(), watch=("{case}/data",), quick=True),
        c("DST inside SRC", ["{case}/data", "{case}/data/converted", *to], prepare=data(), watch=("{case}/data",)),
        c("SRC: a WebDataset shard cut short", ["{case}/data", "{case}/out", *to], prepare=shards(cut=True),
          watch=("{case}/data",), expect=EITHER, sensible=files_there("out/*")),
        c("DST in a read-only folder", ["{data}", "{case}/locked/out", *to],
          prepare=made(lambda f: read_only(f / "locked"))),
        c("DST under a file", ["{data}", "{case}/note.txt/out", *to],
          prepare=made(lambda f: (f / "note.txt").write_text("a file"))),
        c("--to tfrecord", ["{data}", "{case}/out", "--to", "tfrecord"]),
        c("--shard-size 0", ["{data}", "{case}/out", "--to", "webdataset", "--shard-size", "0"]),
        c("--shard-size -1", ["{data}", "{case}/out", "--to", "webdataset", "--shard-size", "-1"]),
        c("SRC: an image id that is a word", ["{case}/data", "{case}/out", *to],
          prepare=coco(lambda d: d["images"][0].update(id="abc")), watch=("{case}/data",)),
        c("SRC: metadata.csv in Latin-1", ["{case}/data", "{case}/out", *to], watch=("{case}/data",),
          prepare=image_folder("metadata.csv", lambda names: csv_text(names, "cœur").encode("cp1252")), expect=EITHER,
          sensible=text_in_output("out/**/metadata.jsonl", "cœur")),
        c("SRC: metadata.csv in UTF-16", ["{case}/data", "{case}/out", *to], watch=("{case}/data",),
          prepare=image_folder("metadata.csv", lambda names: csv_text(names, "cœur").encode("utf-16")), expect=HANDLE,
          sensible=text_in_output("out/**/metadata.jsonl", "cœur")),
        c("SRC and DST with spaces and unicode", ["{case}/my data ☃", "{case}/out ünï", *to], expect=HANDLE,
          prepare=data(name="my data ☃"), sensible=files_there("out ünï/*")),
    ]


def merge_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "adapters merge", args, **kw)  # noqa: E731
    own = dict(prepare=adapter(own_base=True), watch=("{case}/adapter", "{case}/base"))
    return [
        Case("good input: an adapter", "adapters merge", ["{adapter}", "{case}/merged"], expect=HANDLE,
             sensible=files_there("merged/model.safetensors"), baseline=True, quick=True),
        c("ADAPTER missing", ["{case}/nothing", "{case}/merged"], quick=True),
        c("ADAPTER a full checkpoint", ["{best}", "{case}/merged"]),
        c("OUTPUT = its base, --overwrite", ["{case}/adapter", "{case}/base", "--overwrite"], **own, quick=True),
        c("OUTPUT = the adapter, --overwrite", ["{case}/adapter", "{case}/adapter", "--overwrite"], **own),
        c("OUTPUT inside its base, --overwrite", ["{case}/adapter", "{case}/base/merged", "--overwrite"], **own),
        c("OUTPUT a link to its base, --overwrite", ["{case}/adapter", "{case}/alias", "--overwrite"],
          prepare=prepared(adapter(own_base=True), alias("alias", "base")), watch=("{case}/adapter", "{case}/base")),
        c("OUTPUT exists, no --overwrite", ["{adapter}", "{case}/merged"], prepare=checkpoint(name="merged"),
          watch=("{case}/merged",)),
        c("OUTPUT in a read-only folder", ["{adapter}", "{case}/locked/merged"],
          prepare=made(lambda f: read_only(f / "locked"))),
        c("adapter_model.safetensors cut short", ["{case}/adapter", "{case}/merged"],
          prepare=adapter(truncate("adapter_model.safetensors")), watch=("{case}/adapter",), quick=True),
        c("adapter_config.json binary", ["{case}/adapter", "{case}/merged"],
          prepare=adapter(replace("adapter_config.json", os.urandom(200))), watch=("{case}/adapter",)),
        c("base_checkpoint.json names a missing base", ["{case}/adapter", "{case}/merged"],
          prepare=adapter(edit_json("base_checkpoint.json", gone_base))),
        c("base_checkpoint.json is a number", ["{case}/adapter", "{case}/merged"],
          prepare=adapter(replace("base_checkpoint.json", "42"))),
        c("--base the ONNX export", ["{adapter}", "{case}/merged", "--base", "{export}"]),
        c("--base another checkpoint (one weight changed)", ["{adapter}", "{case}/merged", "--base", "{case}/ck"],
          prepare=checkpoint(flip_last_byte("model.safetensors")), watch=("{case}/ck",)),
    ]


def export_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "export", args, **kw)  # noqa: E731
    return [
        c("CHECKPOINT missing", ["{case}/nothing", "{case}/onnx"], quick=True),
        c("OUT_DIR = CHECKPOINT, --overwrite", ["{case}/ck", "{case}/ck", "--overwrite"], prepare=checkpoint(),
          watch=("{case}/ck",), quick=True),
        c("OUT_DIR a link to CHECKPOINT, --overwrite", ["{case}/ck", "{case}/alias", "--overwrite"],
          prepare=prepared(checkpoint(), alias("alias", "ck")), watch=("{case}/ck",)),
        c("OUT_DIR an earlier export, no --overwrite", ["{best}", "{case}/onnx"], prepare=export_copy(),
          watch=("{case}/onnx",)),
        c("OUT_DIR a file", ["{best}", "{image}"]),
        c("OUT_DIR in a read-only folder", ["{best}", "{case}/locked/onnx"],
          prepare=made(lambda f: read_only(f / "locked"))),
        c("CHECKPOINT: config.json binary", ["{case}/ck", "{case}/onnx"],
          prepare=checkpoint(replace("config.json", os.urandom(128))), watch=("{case}/ck",)),
        c("--precision fp16 where ONNX Runtime cannot run it", ["{best}", "{case}/onnx", "--precision", "fp16"],
          expect=EITHER, sensible=files_there("onnx/export.json")),
    ]


def onnx_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "onnx_run", args, **kw)  # noqa: E731
    good = ["{export}", "a red circle", "--steps", "2"]
    return [
        Case("good input: a prompt", "onnx_run", [*good, "--output", "{case}/x.png"], expect=HANDLE,
             sensible=pictures("x.png"), baseline=True, quick=True),
        c("EXPORT_DIR missing", ["{case}/nothing", "a red circle"], quick=True),
        c("no prompt and no --caption", ["{export}"]),
        c("an empty prompt", ["{export}", ""]),
        c("export.json binary", ["{case}/onnx", "a red circle"],
          prepare=export_copy(replace("export.json", os.urandom(100))), watch=("{case}/onnx",)),
        c("unet_step.onnx cut short", ["{case}/onnx", "a red circle", "--output", "{case}/x.png"],
          prepare=export_copy(truncate("unet_step.onnx")), watch=("{case}/onnx",), quick=True),
        c("--steps 0", [*good[:2], "--steps", "0"]),
        c("--steps nan", [*good[:2], "--steps", "nan"]),
        c("--guidance-scale inf", [*good, "--guidance-scale", "inf", "--output", "{case}/x.png"]),
        c("--output in a read-only folder", [*good, "--output", "{case}/locked/x.png"],
          prepare=made(lambda f: read_only(f / "locked"))),
        c("--caption a text file", ["{export}", "--caption", "{case}/notes.png"],
          prepare=file("notes.png", bytes_of("not a picture"))),
        c("--caption a 1×200,000 px picture", ["{export}", "--caption", "{case}/wide.png"],
          prepare=file("wide.png", picture((200_000, 1), "L")), expect=EITHER),
    ]


def app_cases() -> list[Case]:
    c = lambda name, args, **kw: Case(name, "app.py", ["--checkpoint", "{best}", *args], **kw)  # noqa: E731
    return [
        c("--port -1", ["--port", "-1"], quick=True),
        c("--port 70000", ["--port", "70000"]),
        c("--port http", ["--port", "http"]),
        c("--max-megapixels nan", ["--max-megapixels", "nan"]),
        c("--max-upload-mb -1", ["--max-upload-mb", "-1"]),
        c("--checkpoint missing", ["--checkpoint", "{case}/nothing"]),
        c("--data-dir missing", ["--data-dir", "{case}/nothing"]),
        c("--checkpoint: config.json binary", ["--checkpoint", "{case}/ck"],
          prepare=checkpoint(replace("config.json", os.urandom(64))), watch=("{case}/ck",)),
    ]


def all_cases() -> list[Case]:
    return (train_cases() + t2i_cases() + i2t_cases() + eval_cases() + check_cases() + convert_cases()
            + merge_cases() + export_cases() + onnx_cases() + app_cases())


# -- running a case and judging it ------------------------------------------------------------------
@dataclass
class Settings:
    """How the campaign runs: its folder, the processes' environment and bounds."""

    root: Path
    env: dict[str, str]
    timeout: float
    memory_cap_mb: int
    keep: bool
    fingerprints: Fingerprints = field(default_factory=Fingerprints)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] or "case"


def measured(case: Case, proc: Process, lost: list[str], problem: str | None = None) -> dict:
    """A case's row: what happened, in facts; the outcome is judged once every baseline is known."""
    lines = message_lines(proc.stderr)
    text = proc.stderr + proc.stdout
    return {
        "name": case.name, "surface": case.surface, "expect": case.expect, "baseline": case.baseline,
        "exit": proc.exit, "hung": proc.exit is None, "traceback": TRACEBACK in text, "stderr_lines": len(lines),
        "lost": lost, "peak_mb": round(proc.peak_mb, 1), "seconds": round(proc.seconds, 2), "problem": problem,
        "first_line": (lines or said_on_stdout(proc.stdout) or [""])[0][:300],
        "last_line": exception_line(text)[:300],
    }


def said_on_stdout(stdout: str) -> list[str]:
    """What a command that reports on stdout (data check) said: its errors first."""
    lines = message_lines(stdout)
    return [line for line in lines if "error" in line.lower()] + lines


def run_case(index: int, case: Case, material: Material, settings: Settings) -> dict:
    """Lay out the case's inputs in a folder of its own, run it there, and measure it; the folder
    goes afterwards (unless --keep)."""
    folder = settings.root / "cases" / f"{index:03d}-{slug(case.name)}"
    folder.mkdir(parents=True)
    places = material.places(folder)
    try:
        if case.prepare:
            case.prepare(folder, material)
        argv = command(case.surface) + [arg.format_map(places) for arg in case.args]
        watched = [Path(path.format_map(places)) for path in case.watch] + material.inputs()
        before = settings.fingerprints.of(watched)
        proc = execute(argv, folder, settings.root / "logs" / folder.name, case.timeout or settings.timeout,
                       settings.memory_cap_mb, settings.env)
        lost = lost_between(before, settings.fingerprints.of(watched))
        problem = case.forbid(folder, proc.stdout) if case.forbid else None
        if problem is None and proc.exit == 0 and case.sensible:
            try:
                problem = case.sensible(folder, proc.stdout)
            except Exception as error:  # an output that cannot even be read is a wrong one
                problem = f"its output cannot be read: {error}"
        return measured(case, proc, lost, problem)
    finally:
        if not settings.keep:
            release(folder)
            shutil.rmtree(folder, ignore_errors=True)


def judge(row: dict, baseline_mb: float | None) -> str:
    """The outcome of a row: the worst thing it did, else refused or handled."""
    if row["lost"]:
        return LOST
    if row["hung"]:
        return HANG
    if row["traceback"]:
        return TRACED
    if row["exit"] is not None and row["exit"] < 0:
        return CRASHED
    if baseline_mb is not None and row["peak_mb"] > baseline_mb + MEMORY_MARGIN_MB:
        return MEMORY
    if row["problem"]:
        return WRONG
    if row["exit"] == 0:
        return ACCEPTED if row["expect"] == REFUSE else HANDLED
    if row["stderr_lines"] > MAX_LINES:
        return LONG
    return WRONGLY_REFUSED if row["expect"] == HANDLE else REFUSED


def judge_all(rows: list[dict]) -> dict[str, float]:
    """Each row's outcome, against its surface's good input; returns those inputs' peak memory."""
    baselines = {}
    for row in rows:
        if row["baseline"]:
            baselines[row["surface"]] = max(baselines.get(row["surface"], 0), row["peak_mb"])
    for row in rows:
        row["outcome"] = judge(row, None if row["baseline"] else baselines.get(row["surface"]))
    return baselines


# -- the page, through its HTTP API --------------------------------------------------------
@dataclass
class Answer:
    """What the page answered: a message (an error event), a result, or an HTTP status."""

    kind: str  # "error", "complete", "status"
    message: str = ""
    status: int = 200
    body: str = ""


class Server:
    """app.py serving the tiny run, a listener that notices any fetch the page makes, and the
    page's API as a visitor's program calls it."""

    def __init__(self, material: Material, settings: Settings) -> None:
        self.material, self.settings = material, settings
        self.folder = settings.root / "page"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / "server.log"
        self.proc: subprocess.Popen | None = None
        self.fetched = 0
        self.trap = socket.socket()
        self.trap.bind(("127.0.0.1", 0))
        self.trap.listen(8)
        threading.Thread(target=self._count_fetches, daemon=True).start()

    def _count_fetches(self) -> None:
        while True:
            try:
                connection, _ = self.trap.accept()
            except OSError:
                return
            self.fetched += 1
            connection.close()

    @property
    def trap_url(self) -> str:
        return f"http://127.0.0.1:{self.trap.getsockname()[1]}/cat.png"

    def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        argv = command("app.py") + ["--checkpoint", str(self.material.best), "--data-dir", str(self.material.data),
                                    "--port", str(self.port), "--device", "cpu"]
        with open(self.log_path, "ab") as sink:
            self.proc = subprocess.Popen(argv, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                         env=self.settings.env, start_new_session=True)
        RUNNING.add(self.proc.pid)
        cap = self.settings.memory_cap_mb << 20
        resource.prlimit(self.proc.pid, resource.RLIMIT_AS, (cap, cap))
        import httpx

        deadline = time.perf_counter() + 300
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                if httpx.get(self.url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError("app.py did not answer within 300 s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            RUNNING.discard(self.proc.pid)
        self.trap.close()

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def peak_mb(self) -> float:
        return high_water_kb([self.proc.pid]) / 1024

    def call(self, api: str, data: Any, timeout: float) -> Answer:
        """POST the inputs, then read the event stream to its end."""
        import httpx

        body = json.dumps({"data": data}) if not isinstance(data, (bytes, str)) else data
        posted = httpx.post(f"{self.url}gradio_api/call/{api}", content=body,
                            headers={"content-type": "application/json"}, timeout=timeout)
        if posted.status_code != 200:
            return Answer("status", status=posted.status_code, body=posted.text[:2000])
        stream = httpx.get(f"{self.url}gradio_api/call/{api}/{posted.json()['event_id']}", timeout=timeout).text
        events = re.findall(r"event: (\w+)\ndata: (.*)", stream)
        kind, payload = events[-1] if events else ("error", "null")
        if kind == "error":
            try:
                message = (json.loads(payload) or {}).get("error") or ""
            except (ValueError, AttributeError):
                message = payload
            return Answer("error", message=str(message or ""), body=stream)
        return Answer("complete", body=payload)

    def upload(self, path: Path) -> dict:
        import httpx

        answer = httpx.post(f"{self.url}gradio_api/upload", files=[("files", (path.name, path.read_bytes()))],
                            timeout=120)
        if answer.status_code != 200:
            raise UploadRefused(answer.status_code, answer.text)
        return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}

    def get(self, route: str) -> Answer:
        import httpx

        answer = httpx.get(self.url + route, timeout=60)
        return Answer("status", status=answer.status_code, body=answer.text[:2000])


class UploadRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"the upload was refused ({status}): {text[:200]}")
        self.status = status


@dataclass
class PageCase:
    """One request to the page: `request(server, folder)` sends it and returns the answer."""

    name: str
    request: Callable[[Server, Path], Answer]
    expect: str = REFUSE
    secret: str | None = None  # what the answer must not hold (a file of the server's)
    sensible: Callable[[Answer], str | None] | None = None
    quick: bool = False
    baseline: bool = False
    surface: str = "page"


def t2i_inputs(prompt: Any = "a red circle", steps: Any = 2, guidance: Any = 1.0, sampler: Any = "ddim", seed: Any = 0,
               count: Any = 1, preview: Any = False, candidates: Any = 1, negative: Any = "") -> list:
    return [prompt, steps, guidance, sampler, seed, count, preview, candidates, negative]


def i2t_inputs(image: Any, decoding: Any = "greedy", count: Any = 1, beams: Any = 3, temperature: Any = 0.8,
               top_p: Any = 0.9, seed: Any = 0) -> list:
    return [image, decoding, count, beams, temperature, top_p, seed]


def server_file(path: str) -> dict:
    """A file entry naming a path the visitor never uploaded."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def with_upload(make: Callable[[Path, Material], None], name: str,
                send: Callable[[Server, dict], Answer]) -> Callable[[Server, Path], Answer]:
    """Upload a file the case makes, then send it."""
    def request(server: Server, folder: Path) -> Answer:
        path = folder / name
        make(path, server.material)
        try:
            entry = server.upload(path)
        except UploadRefused as refused:
            return Answer("status", status=refused.status, message=str(refused))
        return send(server, entry)
    return request


def images_returned(count: int) -> Callable[[Answer], str | None]:
    def check(answer: Answer) -> str | None:
        try:
            found = len(json.loads(answer.body)[0])
        except (ValueError, IndexError, TypeError):
            return "the answer is not a list of images"
        return None if found == count else f"{found} images, {count} asked"
    return check


def page_cases() -> list[PageCase]:
    t2i = lambda **inputs: lambda s, f: s.call("text_to_image", t2i_inputs(**inputs), 120)  # noqa: E731
    i2t = lambda entry, **inputs: lambda s, f: s.call("image_to_text", i2t_inputs(entry, **inputs), 120)  # noqa: E731
    upload_i2t = lambda make, name, **inputs: with_upload(  # noqa: E731
        make, name, lambda s, entry: s.call("image_to_text", i2t_inputs(entry, **inputs), 120))
    p = PageCase
    return [
        p("good input: a prompt", t2i(), expect=HANDLE, sensible=images_returned(1), baseline=True, quick=True),
        p("text → image: an empty prompt", t2i(prompt=""), quick=True),
        p("text → image: the prompt null", t2i(prompt=None)),
        p("text → image: the prompt a list", t2i(prompt=["a", "b"])),
        p("text → image: a 1 MB prompt", t2i(prompt="a red circle " * 80_000)),
        p("text → image: steps NaN", t2i(steps=float("nan")), quick=True),
        p("text → image: steps Infinity", t2i(steps=float("inf"))),
        p("text → image: steps 'abc'", t2i(steps="abc")),
        p("text → image: steps 10**9", t2i(steps=10**9)),
        p("text → image: guidance -Infinity", t2i(guidance=float("-inf"))),
        p("text → image: sampler 'evil'", t2i(sampler="evil")),
        p("text → image: seed 1e30", t2i(seed=1e30)),
        p("text → image: seed NaN", t2i(seed=float("nan"))),
        p("text → image: seed -3", t2i(seed=-3)),
        p("text → image: images NaN", t2i(count=float("nan"))),
        p("text → image: images 10**6", t2i(count=10**6)),
        p("text → image: best of NaN", t2i(candidates=float("nan"))),
        p("text → image: preview 'yes'", t2i(preview="yes"), expect=EITHER),
        p("text → image: three inputs instead of nine",
          lambda s, f: s.call("text_to_image", ["a red circle", 2, 1.0], 120)),
        p("text → image: a body that is not JSON", lambda s, f: s.call("text_to_image", b"{not json", 120)),
        p("image → text: a URL (never fetched)",
          lambda s, f: s.call("image_to_text", i2t_inputs(server_file(s.trap_url)), 120), quick=True),
        p("image → text: /etc/passwd", i2t(server_file("/etc/passwd")), secret="root:", quick=True),
        p("image → text: ../../etc/passwd", i2t(server_file("../../../../../../etc/passwd")), secret="root:"),
        p("image → text: the checkpoint's config.json",
          lambda s, f: s.call("image_to_text", i2t_inputs(server_file(str(s.material.best / "config.json"))), 120),
          secret="latent_channels"),
        p("image → text: an entry that is a number", i2t(42)),
        p("image → text: an uploaded text file", upload_i2t(bytes_of("not a picture"), "notes.png"), quick=True),
        p("image → text: an uploaded picture cut short", upload_i2t(cut_picture, "cut.png")),
        p("image → text: an uploaded 1×24,000,000 px picture", upload_i2t(picture((24_000_000, 1), "L"), "wide.png"),
          expect=EITHER, quick=True),
        p("image → text: an uploaded 1×200,000 px picture", upload_i2t(picture((200_000, 1), "L"), "wide.png"),
          expect=EITHER),
        p("image → text: an uploaded 30,000×30,000 px header", upload_i2t(png_claiming(30_000, 30_000), "bomb.png")),
        p("image → text: a 20 MB upload (limit 10)", upload_i2t(bytes_of(os.urandom(20 << 20)), "big.png")),
        p("image → text: decoding 'evil'", upload_i2t(the_image, "a.png", decoding="evil")),
        p("image → text: temperature NaN",
          upload_i2t(the_image, "a.png", decoding="sampling", temperature=float("nan"))),
        p("image → text: captions 10**6", upload_i2t(the_image, "a.png", decoding="sampling", count=10**6)),
        p("image → text: greedy, three captions", upload_i2t(the_image, "a.png", count=3)),
        p("search: a query null", lambda s, f: s.call("search_images", [None], 120), expect=EITHER),
        p("search: a 1 MB query", lambda s, f: s.call("search_images", ["a red circle " * 80_000], 120)),
        p("search: captions like /etc/passwd",
          lambda s, f: s.call("search_captions", [server_file("/etc/passwd")], 120), secret="root:"),
        p("file route: /etc/passwd", lambda s, f: s.get("gradio_api/file=/etc/passwd"), secret="root:", quick=True),
        p("file route: the checkpoint's config.json",
          lambda s, f: s.get(f"gradio_api/file={s.material.best / 'config.json'}"), secret="latent_channels"),
        p("file route: ..%2F traversal", lambda s, f: s.get("gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
          secret="root:"),
        p("file route: the data set's annotations",
          lambda s, f: s.get(f"gradio_api/file={s.material.data / TRAIN_JSON}"), secret='"image_id"'),
    ]


def run_page(cases: list[PageCase], material: Material, settings: Settings) -> list[dict]:
    """Every page case against one server, in turn; the server is started again if one kills it."""
    server = Server(material, settings)
    rows = []
    try:
        log("page: starting app.py")
        server.start()
        for index, case in enumerate(cases):
            if not server.alive():
                log("page: the server died; starting it again")
                server.start()
            rows.append(run_page_case(index, case, server, material, settings))
            log(f"page: {case.name}")
    finally:
        server.stop()
    return rows


def run_page_case(index: int, case: PageCase, server: Server, material: Material, settings: Settings) -> dict:
    folder = settings.root / "page" / f"{index:03d}-{slug(case.name)}"
    folder.mkdir(parents=True)
    import httpx

    before = settings.fingerprints.of(material.inputs())
    offset, fetched = len(server.log()), server.fetched
    server.reset_peak()
    begin = time.perf_counter()
    hung, answer = False, Answer("status", status=0)
    try:
        answer = case.request(server, folder)
    except httpx.TimeoutException:
        hung = True
    except httpx.HTTPError as error:
        answer = Answer("status", status=0, message=f"no answer: {error}")
    seconds = time.perf_counter() - begin
    time.sleep(0.2)  # the server's log lines of this request
    alive = server.alive()
    peak = server.peak_mb() if alive else 0.0
    said = server.log()[offset:]
    problem = None
    if server.fetched > fetched:
        problem = "the page fetched the address it was sent"
    elif case.secret and case.secret in answer.body + answer.message:
        problem = "the answer holds the server's file"
    elif answer.kind == "error" and answer.message.strip() in ("", "Error", "None", "null"):
        problem = "answered an error without a message"
    elif answer.kind == "complete" and case.sensible:
        problem = case.sensible(answer)
    refused = answer.kind == "error" or answer.status >= 400
    message = answer.message or (f"HTTP {answer.status}: {answer.body[:200]}" if answer.kind == "status" else "")
    row = {
        "name": case.name, "surface": "page", "expect": case.expect, "baseline": case.baseline,
        "exit": None if hung else (-9 if not alive else 2 if refused else 0 if answer.kind == "complete" else 1),
        "hung": hung, "traceback": TRACEBACK in said, "stderr_lines": len(message_lines(message)),
        "lost": lost_between(before, settings.fingerprints.of(material.inputs())), "peak_mb": round(peak, 1),
        "seconds": round(seconds, 2), "problem": problem,
        "first_line": (message_lines(message) or [answer.body[:200]])[0][:300],
        "last_line": exception_line(said)[:300],
    }
    if not settings.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return row


# -- kill -9 during training, then --resume ----------------------------------------------------------
SAVE_EVERY = 4
PROGRESS = re.compile(r"epoch (\d+)/\d+[^|\r\n]*\|[^|\r\n]*\|\s*(\d+)/(\d+)")
PLANNED = re.compile(r"steps (\d+) → (\d+)")


def steps_done(stderr: str) -> int:
    """The optimiser steps the progress bar last showed done (epochs have equal step counts)."""
    found = PROGRESS.findall(stderr)
    if not found:
        return 0
    epoch, done, per_epoch = (int(v) for v in found[-1])
    return (epoch - 1) * per_epoch + done


def saved_step(run: Path) -> int | None:
    try:
        return int(json.loads((run / "latest" / "trainer_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def metrics_epochs(run: Path) -> list[int]:
    try:
        lines = (run / "metrics.csv").read_text().splitlines()[1:]
    except OSError:
        return []
    return [int(line.split(",")[0]) for line in lines if line.strip()]


def saved_epoch(run: Path) -> int | None:
    try:
        return int(json.loads((run / "latest" / "trainer_state.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def kill_and_resume(material: Material, settings: Settings) -> list[dict]:
    """Train a small run, SIGKILL it early in the first epoch (before any save), just after a
    save and late in the run, resuming each time, then let it finish; each kill's steps lost
    are the steps the progress bar showed done minus the step the next run started from."""
    run = settings.root / "killed"
    base = command("train.py") + ["--preset", "shapes", "--data-dir", str(material.long_data), "--output-dir", str(run),
                                  "--epochs", "1", "--diffusion-epochs", "1", "--batch-size", "4", "--save-every",
                                  str(SAVE_EVERY), "--no-sample-every-epoch", *TINY_FLAGS]
    total = 2 * 10  # 40 training images in batches of 4, two epochs
    points = [
        ("early in the first epoch, before any save", lambda err: steps_done(read(err)) >= 2),
        ("just after a save", lambda err: (saved_step(run) or 0) >= 2 * SAVE_EVERY),
        ("late in the run", lambda err: steps_done(read(err)) >= total - 2),
    ]
    read = lambda path: path.read_bytes().decode("utf-8", "replace")  # noqa: E731
    env = settings.env | {"TQDM_MININTERVAL": "0"}  # the bar shows every step: what a kill lost is countable
    rows, resume = [], False
    for index, (point, stop_when) in enumerate(points + [("the last resume, to the end", None)]):
        argv = base + (["--resume"] if resume else [])
        proc = execute(argv, settings.root, settings.root / "logs" / "killed" / f"run{index}", 600,
                       settings.memory_cap_mb, env, stop_when)
        planned = PLANNED.search(proc.stdout + proc.stderr)
        started_at = int(planned.group(1)) if planned else None
        if rows:  # this run resumed the one killed before it
            rows[-1]["resumed_from"] = started_at
            rows[-1]["resume_exit"] = proc.exit
            rows[-1]["resume_message"] = (message_lines(proc.stderr) or [""])[0][:300]
            rows[-1]["steps_lost"] = None if started_at is None else rows[-1]["steps_done"] - started_at
        if resume and proc.exit not in (0, None) and not proc.stopped:  # refused to resume: start afresh
            rows[-1]["resume_refused"] = rows[-1]["resume_message"]
            log(f"kill -9: --resume refused ({rows[-1]['resume_message'][:120]}); starting afresh")
            proc = execute(base + ["--overwrite"], settings.root, settings.root / "logs" / "killed" / f"run{index}b",
                           600, settings.memory_cap_mb, env, stop_when)
            rows[-1]["resumed_from"] = 0
            rows[-1]["steps_lost"] = rows[-1]["steps_done"]
        if stop_when is None:
            rows.append({"point": point, "exit": proc.exit, "traceback": TRACEBACK in proc.stderr,
                         "final_step": saved_step(run), "planned_steps": total, "metrics_epochs": metrics_epochs(run)})
            break
        epochs = metrics_epochs(run)
        rows.append({"point": point, "steps_done": steps_done(proc.stderr), "saved_step": saved_step(run),
                     "save_every": SAVE_EVERY, "exit": proc.exit, "killed": proc.stopped,
                     "metrics_ahead_of_latest": bool(epochs) and max(epochs) > (saved_epoch(run) or 0)})
        log(f"kill -9 {point}: {rows[-1]['steps_done']} steps done, latest/ at step {rows[-1]['saved_step']}")
        resume = True
    return rows


# -- the report ---------------------------------------------------------------------------------
FAILURE_COLUMNS = [(TRACED, "tracebacks"), (HANG, "hangs"), (LOST, "data lost")]


def markdown(rows: list[dict], kills: list[dict], baselines: dict[str, float], seconds: float,
             memory_cap_mb: int = 0, timeout_s: float = 0) -> str:
    """The campaign's tables: per surface, the cases that were not clean, and the kill -9 runs."""
    tried = [row for row in rows if not row["baseline"]]
    lines = ["| surface | tried | refused in one line | handled | tracebacks | hangs | data lost | other | "
             "worst peak MB | good input's MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for surface in SURFACES + ["all"]:
        mine = [row for row in tried if surface in ("all", row["surface"])]
        if not mine:
            continue
        count = lambda *outcomes: sum(row["outcome"] in outcomes for row in mine)  # noqa: E731
        other = len(mine) - count(REFUSED, HANDLED, TRACED, HANG, LOST)
        base = baselines.get(surface)
        lines.append(f"| {surface} | {len(mine)} | {count(REFUSED)} | {count(HANDLED)} | {count(TRACED)} | "
                     f"{count(HANG)} | {count(LOST)} | {other} | {max(row['peak_mb'] for row in mine):,.0f} | "
                     f"{'' if base is None else f'{base:,.0f}'} |")
    bad = [row for row in tried if row["outcome"] not in CLEAN]
    lines += ["", f"Not refused or handled cleanly: {len(bad)} of {len(tried)}.", ""]
    for row in bad:
        said = row["last_line"] if row["outcome"] == TRACED else row["problem"] or row["first_line"]
        said = said.replace("`", "'")[:240]
        lost = f" (changed: {', '.join(Path(p).name for p in row['lost'][:3])})" if row["lost"] else ""
        lines.append(f"- **{row['outcome']}** · {row['surface']} · {row['name']} · exit {row['exit']}, "
                     f"{row['peak_mb']:,.0f} MB{lost}: `{said}`")
    if kills:
        lines += ["", "| kill -9 | steps done | latest/ at | resumed from | steps lost | save interval | "
                  "metrics.csv ahead of latest/ | then `--resume` |", "|---|---:|---:|---:|---:|---:|---|---|"]
        for kill in kills:
            if "steps_done" in kill:
                answer = ("resumed" if kill.get("resume_exit") in (0, -9) else f"exit {kill.get('resume_exit')}")
                if "resume_refused" in kill:
                    answer = f"refused: {kill['resume_refused']} (a fresh start with --overwrite)"
                saved = "nothing saved" if kill["saved_step"] is None else kill["saved_step"]
                lines.append(f"| {kill['point']}{'' if kill['killed'] else ' (the run ended first)'} | "
                             f"{kill['steps_done']} | {saved} | {kill.get('resumed_from')} | "
                             f"{kill.get('steps_lost')} | {kill['save_every']} | "
                             f"{'yes' if kill['metrics_ahead_of_latest'] else 'no'} | {answer} |")
            else:
                lines.append(f"| {kill['point']} | | {kill['final_step']} of {kill['planned_steps']} | | | | "
                             f"epochs {kill['metrics_epochs']} | exit {kill['exit']}"
                             f"{', traceback' if kill['traceback'] else ''} |")
    lines += ["", f"{len(tried)} bad inputs in {seconds / 60:.1f} minutes on {os.cpu_count()} cores "
                  f"(load average {os.getloadavg()[0]:.1f} at the end); each process's address space capped at "
                  f"{memory_cap_mb:,} MB, each case's time at {timeout_s:.0f} s unless it says otherwise."]
    return "\n".join(lines)


def portable(text: str, root: Path) -> str:
    """A message without this campaign's temporary folders: {case} for a case's, {campaign} for the rest."""
    text = re.sub(re.escape(str(root)) + r"/(cases|page)/\d{3}-[^/\s'\"]*", "{case}", text)
    return text.replace(str(root), "{campaign}")


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True).stdout
        return head.strip() + (" with uncommitted changes" if dirty.strip() else "")
    except OSError:
        return "unknown"


# -- the command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="the JSON of every row (default: %(default)s)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--quick", action="store_true", help="a few cases of each surface, no kill -9 runs")
    parser.add_argument("--only", help="only the cases whose surface or name holds this text (or one of these, "
                        "comma-separated; 'kill' for the kill -9 runs)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds before a case counts as hung")
    parser.add_argument("--memory-cap-mb", type=int, default=6144,
                        help="address space each process may take, so that a case cannot take the whole machine "
                             "(default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep every case's files; a later "
                        "campaign with the same --keep reuses its material")
    parser.add_argument("--no-page", action="store_true", help="skip the web page")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill -9 runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up as on Ctrl-C
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="reliability-"))
    reuse = args.keep is not None and (root / MATERIAL_MARK).is_file()
    for previous in ("cases", "page", "killed", "logs", "gradio", "tmp"):  # an earlier campaign's, kept
        release(root / previous)
        shutil.rmtree(root / previous, ignore_errors=True)
    (root / "gradio").mkdir(parents=True)
    (root / "tmp").mkdir()
    settings = Settings(root, child_env(root), args.timeout, args.memory_cap_mb, keep=args.keep is not None)
    try:
        if reuse:
            log(f"material: reusing {root}")
            kept = json.loads((root / MATERIAL_MARK).read_text())
            material, rows = Material(**{name: Path(path) for name, path in kept.items()}), []
        else:
            material, rows = build_material(root, settings)
            (root / MATERIAL_MARK).write_text(json.dumps({k: str(v) for k, v in asdict(material).items()}))
        cases = chosen(all_cases(), args.quick, args.only)
        pages = chosen(page_cases(), args.quick, args.only) if not args.no_page else []
        kill = not (args.quick or args.no_kill or args.only) or "kill" in (args.only or "").split(",")
        log(f"{len(cases)} command-line cases, {len(pages)} page cases{', the kill -9 runs' if kill else ''}")
        pool = ThreadPoolExecutor(max(1, args.jobs))
        try:
            killing = pool.submit(kill_and_resume, material, settings) if kill else None
            paging = pool.submit(run_page, pages, material, settings) if pages else None
            futures = [pool.submit(run_logged, index, case, material, settings) for index, case in enumerate(cases)]
            rows += [future.result() for future in futures] + (paging.result() if paging else [])
            kills = killing.result() if killing else []
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        baselines = judge_all(rows)
        for row in rows + kills:
            for key in ("first_line", "last_line", "problem", "resume_message", "resume_refused"):
                if row.get(key):
                    row[key] = portable(row[key], root)
        order = {surface: index for index, surface in enumerate(SURFACES)}
        rows.sort(key=lambda row: order.get(row["surface"], len(order)))
        seconds = time.perf_counter() - START
        table = markdown(rows, kills, baselines, seconds, args.memory_cap_mb, args.timeout)
        from multimodal.files import write_text_atomically

        results = {"revision": git_revision(), "machine": platform.platform(), "cores": os.cpu_count(),
                   "seconds": round(seconds), "quick": args.quick, "memory_cap_mb": args.memory_cap_mb,
                   "timeout_s": args.timeout, "baselines_mb": baselines, "rows": rows, "kills": kills}
        write_text_atomically(args.output, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        if args.markdown:
            write_text_atomically(args.markdown, table + "\n")
        print(table)
        return 0 if all(row["outcome"] in CLEAN for row in rows if not row["baseline"]) else 1
    finally:
        stop_running()
        if args.keep is None:
            release(root)
            shutil.rmtree(root, ignore_errors=True)


def chosen(cases: list, quick: bool, only: str | None) -> list:
    """The cases --quick and --only choose, with the good input of each surface they touch (the
    memory bound's base)."""
    parts = only.split(",") if only else []
    picked = [case for case in cases if (not quick or case.quick)
              and (not parts or any(part in case.surface or part in case.name for part in parts))]
    surfaces = {case.surface for case in picked if not case.baseline}
    return [case for case in cases if case in picked or (case.baseline and case.surface in surfaces)]


def run_logged(index: int, case: Case, material: Material, settings: Settings) -> dict:
    row = run_case(index, case, material, settings)
    log(f"{row['surface']}: {case.name} → exit {row['exit']}, {row['seconds']:.0f} s")
    return row


if __name__ == "__main__":
    raise SystemExit(main())
