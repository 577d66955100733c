"""Pretrain with the patch embedding's stride set to STRIDE (OLP grid) instead of the patch size. (One-off experiment, see README.md.)"""
import sys, torch, torch.nn.functional as F, logging
import agreid.synthclip as sc
logging.basicConfig(level=logging.INFO)
stride=int(sys.argv[1]); data=sys.argv[2]; out=sys.argv[3]; epochs=int(sys.argv[4])
orig=sc.build_model_and_transforms
def patched(name, crop_scale=(0.8,1.0)):
    model,tr,ev=orig(name,crop_scale)
    v=model.visual
    v.conv1.stride=(stride,stride)
    g=((128-16)//stride+1,(64-16)//stride+1)
    pe=v.positional_embedding.data
    cls,grid=pe[:1],pe[1:].reshape(1,8,4,-1).permute(0,3,1,2)
    grid=F.interpolate(grid,size=g,mode='bicubic',align_corners=False).permute(0,2,3,1).reshape(-1,pe.shape[1])
    v.positional_embedding=torch.nn.Parameter(torch.cat([cls,grid])); v.grid_size=g
    return model,tr,ev
sc.build_model_and_transforms=patched
sc.pretrain(data,out,sc.PretrainConfig(epochs=epochs),resume=False)
