from bench.run import main

if __name__ == "__main__":  # spawned training processes import this module again
    raise SystemExit(main())
