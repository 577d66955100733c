"""Zero-shot on held-out images cropped and upscaled like the training crops (BOX), or masked below row 42 (mask). (One-off experiment, see README.md.)"""
import json, sys, numpy as np, torch
from pathlib import Path
from PIL import Image
import agreid.synthclip as sc
from agreid.data.captions import read_captions
from agreid.data.synthetic import ATTRIBUTE_SCHEMA
w=sys.argv[1]; box=(sys.argv[2] if sys.argv[2]=="mask" else eval(sys.argv[2])) if len(sys.argv)>2 else None
d=Path('datasets/SyntheticCaptions')
model,tr,tok,_=sc.load_synthclip(w)
paths=[p for p,_ in read_captions(d/'captions_val.csv')]
ims=[]
for p in paths:
    im=Image.open(p).convert('RGB')
    if box=="mask":
        a=np.array(im); a[42:]=128; im=Image.fromarray(a)
    elif box: im=im.crop(box).resize((64,128),Image.BILINEAR)
    ims.append(tr(im))
with torch.no_grad(): f=model.encode_image(torch.stack(ims),normalize=True)
shown=sc._shown_attributes(d,paths)
for att in ['hair_color','hat','upper_color','shoes']:
    vals=ATTRIBUTE_SCHEMA[att]; t=sc.encode_texts(model,tok,sc.zero_shot_prompts(att))
    keep,truth=shown[att]; truth=np.array([vals.index(v) for v in truth])
    pred=(f@t.T).argmax(1).numpy()[keep]
    print(att, round((pred==truth).mean(),3))
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
keep,truth=shown['hair_color']
print('probe hair', cross_val_score(LogisticRegression(max_iter=2000), f[keep].numpy(), truth, cv=3).mean())
