"""The networks: StyleGAN2 and its converted-generator wrapper, SPHInX's
projection heads, LPIPS and the digits prior's discriminator."""
