// image.h: float images in [-1,1] -> uint8 -> PNG grids (stb_image_write).
#ifndef DDPM_IMAGE_H
#define DDPM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

// map a float in [-1,1] to uint8: round(clamp((x+1)/2,0,1)*255); NaN -> 0
uint8_t to_u8(float x);

// Write n images x[n, C, H, W] (values in [-1,1]; C = 1 or 3) as a PNG grid with `ncols` images per
// row and a `pad`-pixel black border between and around images, like torchvision.utils.make_grid
// (nrow=ncols, padding=pad): columns = min(ncols, n), rows = ceil(n / columns),
// size (W+pad)*columns+pad wide by (H+pad)*rows+pad high. C = 1 writes a grayscale PNG, C = 3 RGB.
// Writes to a temp file then renames. Returns 0 or -1 with a message in err.
int write_png_grid(const char *path, const float *x, int n, int C, int H, int W, int ncols, int pad,
                   char *err, size_t errlen);

#endif
