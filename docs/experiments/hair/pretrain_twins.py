"""Pretrain on make_hair_twins.py's corpus with each twin pair kept in one batch. (One-off experiment, see README.md.)

    python pretrain_twins.py CORPUS OUTPUT EPOCHS [MAX_STEPS]

agreid.synthclip.pretrain builds its loader with torch's DataLoader; this script hands it a
DataLoader whose batch sampler keeps the two images of a twin pair (units.json) together.
"""
import json
import logging
import sys
from pathlib import Path

import torch

import agreid.synthclip as sc

logging.basicConfig(level=logging.INFO)
data, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
units = json.load(open(Path(data) / "units.json"))


class UnitSampler(torch.utils.data.Sampler):
    """Shuffled units (a twin pair or a single image) packed into batches of at most batch_size."""

    def __init__(self, keys, batch_size, generator):
        groups = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        self.units, self.batch_size, self.generator, self.count = list(groups.values()), batch_size, generator, len(keys)

    def __iter__(self):
        batch = []
        for unit in torch.randperm(len(self.units), generator=self.generator).tolist():
            if len(batch) + len(self.units[unit]) > self.batch_size:
                yield batch
                batch = []
            batch += self.units[unit]

    def __len__(self):
        return self.count // self.batch_size - 1


def twin_loader(dataset, batch_size, shuffle, drop_last, num_workers, generator):
    keys = [units[str(Path(path).resolve())] for path in dataset.paths]
    return torch.utils.data.DataLoader(dataset, batch_sampler=UnitSampler(keys, batch_size, generator),
                                       num_workers=num_workers)


sc.DataLoader = twin_loader
max_steps = int(sys.argv[4]) if len(sys.argv) > 4 else None
sc.pretrain(data, out, sc.PretrainConfig(epochs=epochs), resume=False, max_steps=max_steps)
