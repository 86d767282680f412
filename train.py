"""Entry point: ``python train.py {fit,validate,test,predict} --config configs/<name>.yaml``."""

from raccn.cli import main

if __name__ == "__main__":
    main()
