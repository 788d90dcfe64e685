"""Layer 3: figures about images, samples and walks (PSNR/SSIM, CLIP score, FID/KID, smoothness), and
the schema of what `ldm evaluate` writes."""
