"""A copy of the SynthCLIP corpus with a share of its pairs replaced (one-off experiment, see README.md).

    python make_variant_corpus.py zoom  OUT FRACTION ZMIN ZMAX   top-anchored crops zoomed ZMIN..ZMAX times
    python make_variant_corpus.py crop  OUT FRACTION "(l,t,r,b)"  one fixed crop (a 2x head-and-shoulders box)
    python make_variant_corpus.py head  OUT FRACTION ROW          everything below ROW painted grey

A replaced image is captioned anew from its ground truth with only what it still shows.
"""
import csv, json, sys
from pathlib import Path

import numpy as np
from PIL import Image

from agreid.data.captions import _write_csv, describe

SOURCE = Path("datasets/SyntheticCaptions")


def zoom(image, label, attributes, rng, zmin, zmax):
    z = rng.uniform(float(zmin), float(zmax))
    h, w = 128 / z, 64 / z
    hidden = set(label["regions"])
    if z > 1.5:
        hidden |= {"lower", "feet"}
    elif z > 1.1:
        hidden |= {"feet"}
    caption, _ = describe(attributes, sorted(hidden), label["occluder"] if "head" not in hidden else "none", rng)
    return image.resize((64, 128), Image.BILINEAR, box=(32 - w / 2, 0, 32 + w / 2, h)), caption


def crop(image, label, attributes, rng, box):
    hidden = sorted(set(label["regions"]) | {"lower", "feet"})
    caption, _ = describe(attributes, hidden, "none", rng)
    return image.crop(eval(box)).resize((64, 128), Image.BILINEAR), caption


def head(image, label, attributes, rng, row):
    if "head" in label["regions"]:
        return None
    caption, _ = describe(attributes, ["upper", "lower", "feet"], "none", rng)
    pixels = np.array(image)
    pixels[int(row):] = 128
    return Image.fromarray(pixels), caption


def main(mode, out, fraction, *args):
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    labels = json.load(open(SOURCE / "labels.json"))
    people = json.load(open(SOURCE / "attributes.json"))["identities"]
    rows = list(csv.DictReader(open(SOURCE / "captions.csv"), delimiter="\t"))
    rng = np.random.default_rng(123)
    chosen = set(rng.permutation(len(rows))[:int(float(fraction) * len(rows))].tolist())
    variant = {"zoom": zoom, "crop": crop, "head": head}[mode]
    result = []
    for i, row in enumerate(rows):
        label = labels[row["filepath"]]
        made = None
        if i in chosen:
            image = Image.open(SOURCE / row["filepath"]).convert("RGB")
            made = variant(image, label, people[label["pid"]], rng, *args)
        if made is None:
            result.append((str((SOURCE / row["filepath"]).resolve()), row["title"]))
            continue
        path = out / "img" / row["filepath"].replace("/", "_")
        made[0].save(path, quality=95)
        result.append((str(path.resolve()), made[1]))
    _write_csv(out / "captions.csv", result)
    print(len(result), "pairs,", len(chosen), "chosen")


if __name__ == "__main__":
    main(*sys.argv[1:])
