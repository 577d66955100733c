"""Corpus copy where N pairs get a twin identical but for hair colour, captions differing in that word only. (One-off experiment, see README.md.)"""
import csv, json, re, sys, numpy as np
from pathlib import Path
from agreid.data import captions as C, synthetic as S
out=Path(sys.argv[1]); ntw=int(sys.argv[2])
d=Path('datasets/SyntheticCaptions'); cfg=C.CAPTION_PRESETS['pretrain']; seed=0
people=C._make_people(cfg, seed); items=C._make_plan(cfg, people, seed)
labels=json.load(open(d/'labels.json'))
rows={r['filepath']:r['title'] for r in csv.DictReader(open(d/'captions.csv'),delimiter='\t')}
train=[it for it in items if people[it['pid']]['split']=='train']
HW=r'(black|brown|blond|blonde|grey|gray)( hair)'
cand=[it for it in train if re.search(HW, rows[it['name']])]
rng=np.random.default_rng(7); sel=[cand[i] for i in rng.permutation(len(cand))[:ntw]]
selnames={it['name'] for it in sel}
others=[it for it in train if it['name'] not in selnames]
drop={others[i]['name'] for i in rng.permutation(len(others))[:ntw]}
(out/'train').mkdir(parents=True, exist_ok=True)
twin_people={}; twin_items=[]; nextpid=100000
for it in sel:
    p=people[it['pid']]; a=dict(p['attributes']); old=a['hair_color']
    a['hair_color']=str(rng.choice([v for v in S.ATTRIBUTE_SCHEMA['hair_color'] if v!=old]))
    tp={'attributes':a,'params':p['params'],'split':'train','appearance':S._appearance(a,p['params'])}
    twin_people[nextpid]=tp
    ti=dict(it); ti['pid']=nextpid; ti['name']=f"train/{nextpid}_{it['name'].split('/')[1]}"
    twin_items.append((it,ti,a['hair_color'])); nextpid+=1
allp=dict(people); allp.update(twin_people)
ctx={'seed':seed,'identities':allp,'dataset_dir':str(out),'cameras':S._make_cameras(cfg.num_cameras, seed, stream='caption_camera')}
recs=S.render_images([ti for _,ti,_ in twin_items], ctx, 2)
outrows=[]; unit={}
for it in train:
    if it['name'] in drop: continue
    outrows.append((str((d/it['name']).resolve()), rows[it['name']])); unit[outrows[-1][0]]=it['name']
for k,(it,ti,new) in enumerate(twin_items):
    cap=re.sub(HW, lambda m: new+m.group(2), rows[it['name']], count=1)
    p=str((out/ti['name']).resolve()); outrows.append((p,cap)); unit[p]=it['name']
    if k<3: print(rows[it['name']], '||', cap, recs[ti['name']]['regions'], labels[it['name']]['regions'])
C._write_csv(out/'captions.csv', outrows)
json.dump(unit, open(out/'units.json','w'))
print(len(outrows))
