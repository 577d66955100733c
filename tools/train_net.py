#!/usr/bin/env python
"""Train and evaluate AG-ReID (or any fastreid model) with fastreid's command-line flags.

    python tools/train_net.py --config-file configs/OccDuke/agreid.yml [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 4
    torchrun --nproc_per_node 4 tools/train_net.py --config-file ...
"""
import agreid
from agreid.engine import AGReIDTrainer, launch
from fastreid.engine import default_argument_parser, default_setup
from fastreid.utils import comm
from fastreid.utils.logger import setup_logger


def setup(args):
    """Create the config from fastreid's defaults, AG-ReID's keys, the file and the command line."""
    cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="agreid")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = AGReIDTrainer.build_trained_model(cfg)
        return AGReIDTrainer.test(cfg, model)
    trainer = AGReIDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
