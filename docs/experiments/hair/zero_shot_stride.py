"""Zero-shot of a checkpoint pretrained by pretrain_stride.py (its patch grid rebuilt first). (One-off experiment, see README.md.)

    python zero_shot_stride.py STRIDE WEIGHTS      (16, the patch size, for any other SynthCLIP state dict)
"""
import sys
from pathlib import Path

import open_clip

import agreid.synthclip as sc
from agreid.serialization import load_checkpoint_file
from pretrain_stride import set_stride

stride, weights = int(sys.argv[1]), sys.argv[2]
name = "AGReID-Tiny-ViT"
model, _, _ = sc.build_model_and_transforms(name)
if stride != model.visual.patch_size[0]:
    set_stride(model, stride)
model.load_state_dict(load_checkpoint_file(weights)["state_dict"])
model.eval()
rows = sc.zero_shot_attributes(model, open_clip.get_tokenizer(name), Path("datasets/SyntheticCaptions"),
                               sc.eval_transform(name))
for row in rows:
    print(f"{row.attribute:14s} {row.accuracy:.3f} maj {row.majority:.3f}")
