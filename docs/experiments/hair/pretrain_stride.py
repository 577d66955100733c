"""Pretrain with the patch embedding's stride set to STRIDE (OLP grid) instead of the patch size. (One-off experiment, see README.md.)

    python pretrain_stride.py STRIDE CORPUS OUTPUT EPOCHS
"""
import logging
import sys

import torch
import torch.nn.functional as F

import agreid.synthclip as sc


def set_stride(model, stride):
    """Give ``model.visual`` patch stride ``stride``, its positional grid resampled (bicubic) to the new grid."""
    visual = model.visual
    (height, width), (patch_h, patch_w) = visual.image_size, visual.patch_size
    grid = ((height - patch_h) // stride + 1, (width - patch_w) // stride + 1)
    visual.conv1.stride = (stride, stride)
    position = visual.positional_embedding.data
    cls, old = position[:1], position[1:].reshape(1, *visual.grid_size, -1).permute(0, 3, 1, 2)
    new = F.interpolate(old, size=grid, mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(-1, position.shape[1])
    visual.positional_embedding = torch.nn.Parameter(torch.cat([cls, new]))
    visual.grid_size = grid
    return model


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    stride, data, out, epochs = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    build = sc.build_model_and_transforms

    def build_with_stride(name, crop_scale=(0.8, 1.0)):
        model, train_transform, eval_transform = build(name, crop_scale)
        return set_stride(model, stride), train_transform, eval_transform

    sc.build_model_and_transforms = build_with_stride
    sc.pretrain(data, out, sc.PretrainConfig(epochs=epochs), resume=False)
