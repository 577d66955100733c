"""Train the SynthCLIP image tower with cross-entropy on one attribute (a ceiling for the contrastive runs). (One-off experiment, see README.md.)"""
import json, sys, time, numpy as np, torch, torch.nn as nn
from pathlib import Path
from PIL import Image
import agreid.synthclip  # registers the project's open_clip model configs
from agreid.data.captions import read_captions, is_visible
from agreid.data.synthetic import ATTRIBUTE_SCHEMA
torch.manual_seed(0); torch.set_num_threads(2)
patch=int(sys.argv[1]); steps=int(sys.argv[2]); att=sys.argv[3] if len(sys.argv)>3 else 'hair_color'
d=Path('datasets/SyntheticCaptions')
labels=json.load(open(d/'labels.json')); people=json.load(open(d/'attributes.json'))['identities']
def load(csvname, n):
    X=[];Y=[]
    for p,_ in read_captions(d/csvname):
        lab=labels[str(Path(p).relative_to(d))]; a=people[lab['pid']]
        if not is_visible(att,a,lab['regions']): continue
        X.append(np.array(Image.open(p).convert('RGB'))); Y.append(ATTRIBUTE_SCHEMA[att].index(a[att]))
        if len(X)>=n: break
    X=torch.tensor(np.stack(X)).permute(0,3,1,2).float()/127.5-1
    return X, torch.tensor(Y)
Xtr,Ytr=load('captions.csv',12000); Xva,Yva=load('captions_val.csv',5000)
import open_clip
from open_clip.model import _build_vision_tower
cfg=open_clip.get_model_config("AGReID-Tiny-ViT")  # SynthCLIP's tower, with the patch size asked for
v=_build_vision_tower(cfg['embed_dim'], open_clip.model.CLIPVisionCfg(**dict(cfg['vision_cfg'], patch_size=patch)))
head=nn.Linear(cfg['embed_dim'],len(ATTRIBUTE_SCHEMA[att]))
opt=torch.optim.AdamW(list(v.parameters())+list(head.parameters()),lr=1e-3,weight_decay=0.05)
t0=time.time()
for s in range(steps):
    i=torch.randint(0,len(Xtr),(128,))
    loss=nn.functional.cross_entropy(head(v(Xtr[i])),Ytr[i]); opt.zero_grad(); loss.backward(); opt.step()
v.eval()
with torch.no_grad(): acc=(head(v(Xva)).argmax(1)==Yva).float().mean().item()
maj=np.bincount(Yva.numpy()).max()/len(Yva)
print(f"patch {patch} {att} steps {steps}: val acc {acc:.3f} (majority {maj:.3f}), {time.time()-t0:.0f}s, final loss {loss.item():.3f}")
