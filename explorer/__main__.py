"""`python -m explorer` is the `explore` command: the module torchrun launches
(`torchrun --nproc_per_node N -m explorer run ...`, explorer/model/ddp.py)."""
from cli import app

if __name__ == "__main__":
    app(prog_name="explore")
