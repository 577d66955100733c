"""Zero-shot confusion matrix and prompt similarities for hair and upper colour of a SynthCLIP file. (One-off experiment, see README.md.)"""
import numpy as np
from pathlib import Path
import agreid.synthclip as sc
from agreid.data.captions import read_captions, VAL_CAPTIONS_FILE
from agreid.data.synthetic import ATTRIBUTE_SCHEMA
import sys
w = sys.argv[1] if len(sys.argv)>1 else "pretrained/SynthCLIP-Tiny.pt"
data=Path("datasets/SyntheticCaptions")
model, tr, tok, _ = sc.load_synthclip(w)
paths=[p for p,_ in read_captions(data/VAL_CAPTIONS_FILE)]
f=sc.encode_images(model,paths,tr)
shown=sc._shown_attributes(data,paths)
for att in ["hair_color","upper_color"]:
    vals=ATTRIBUTE_SCHEMA[att]
    t=sc.encode_texts(model,tok,sc.zero_shot_prompts(att))
    pred=(f@t.T).argmax(1).numpy()
    keep,truth=shown[att]
    truth=np.array([vals.index(v) for v in truth]); p=pred[keep]
    M=np.zeros((len(vals),len(vals)),int)
    for a,b in zip(truth,p): M[a,b]+=1
    print(att, vals); print(M)
    print("text cos sims"); print((t@t.T).numpy().round(2))
