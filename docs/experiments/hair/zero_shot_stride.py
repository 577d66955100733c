"""Zero-shot of a checkpoint pretrained by pretrain_stride.py (its patch grid rebuilt first). (One-off experiment, see README.md.)"""
import sys, torch, torch.nn.functional as F, numpy as np, open_clip
import agreid.synthclip as sc
from agreid.serialization import load_checkpoint_file
from pathlib import Path
stride=int(sys.argv[1]); w=sys.argv[2]
model,tr,_=sc.build_model_and_transforms("AGReID-Tiny-ViT")
v=model.visual
if stride!=16:
    v.conv1.stride=(stride,stride); g=((128-16)//stride+1,(64-16)//stride+1)
    v.positional_embedding=torch.nn.Parameter(torch.zeros(g[0]*g[1]+1,128)); v.grid_size=g
model.load_state_dict(load_checkpoint_file(w)['state_dict']); model.eval()
tok=open_clip.get_tokenizer("AGReID-Tiny-ViT")
rows=sc.zero_shot_attributes(model,tok,Path('datasets/SyntheticCaptions'),sc.eval_transform("AGReID-Tiny-ViT"))
for r in rows: print(f"{r.attribute:14s} {r.accuracy:.3f} maj {r.majority:.3f}")
