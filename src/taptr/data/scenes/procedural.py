"""Textures and shapes for the synthetic scene engine, generated in PyTorch.

Three sources of layer appearance:
* procedural textures (multi-scale noise, stripes, checkers, blobs, colour gradients), always
  with fine-scale detail so that every pixel is trackable;
* crops of photographs from a `TextureLibrary` (backgrounds, or fillings of random shapes);
* photo cut-outs with their real alpha mask.
and random smooth shapes (star-convex blobs, polygons, rounded boxes, unions, rings) that cut
a texture into a foreground object.

All randomness comes from a CPU `torch.Generator` (small draws only), so a texture is the same
on every device up to floating-point rounding. Images are float tensors in [0, 1], `[C, H, W]`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(generator: torch.Generator, low: float, high: float, size=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator)


def _pixel_coordinates(height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """x `[1, W]` and y `[H, 1]` pixel-centre coordinates."""
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :]
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None]
    return xs, ys


def fractal_noise(
    channels: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device,
    coarsest_cells: float = 3.0,
    octaves: int = 5,
    persistence: float = 0.6,
) -> torch.Tensor:
    """Multi-scale smooth noise `[channels, height, width]`, about zero mean and unit std.

    Octave k is random noise on a grid with `coarsest_cells * 2**k` cells along the longer
    side, with amplitude `persistence**k`. Built as a pyramid: the sum so far is upsampled by
    2 (bilinear) before each finer octave is added, and the finest level is upsampled
    bicubically to the output size, so the cost is about that of one full-size upsample.
    """
    longer = max(height, width)
    total = None
    norm = 0.0
    for octave in range(octaves):
        cells = coarsest_cells * 2**octave
        cells_y = max(2, round(cells * height / longer) + 1)
        cells_x = max(2, round(cells * width / longer) + 1)
        amplitude = persistence**octave
        noise = amplitude * torch.randn(1, channels, cells_y, cells_x, generator=generator).to(
            device
        )
        if total is not None:
            noise += F.interpolate(
                total, size=(cells_y, cells_x), mode="bilinear", align_corners=True
            )
        total = noise
        norm += amplitude**2
    upsampled = F.interpolate(total, size=(height, width), mode="bicubic", align_corners=True)[0]
    return upsampled / math.sqrt(norm)


def _random_colours(count: int, generator: torch.Generator, device) -> torch.Tensor:
    """`[count, 3, 1, 1]` random RGB colours in [0, 1]."""
    return torch.rand(count, 3, 1, 1, generator=generator).to(device)


def _noise_pattern(height, width, generator, device) -> torch.Tensor:
    """Coloured fractal noise: a mean colour plus a random colour mixing of 3 noise fields."""
    noise = fractal_noise(
        3, height, width, generator, device, coarsest_cells=_uniform(generator, 2, 6).item()
    )
    mixing = (torch.randn(3, 3, generator=generator) * 0.18).to(device)
    mean = _random_colours(1, generator, device)[0]
    return mean + torch.einsum("ij,jhw->ihw", mixing, noise)


def _stripe_pattern(height, width, generator, device) -> torch.Tensor:
    """Two-colour (possibly wavy) stripes with a random direction and period."""
    xs, ys = _pixel_coordinates(height, width, device)
    angle = _uniform(generator, 0, math.pi).item()
    period = _uniform(generator, 5, 40).item()
    warp = fractal_noise(1, height, width, generator, device, octaves=3)[0]
    warp_strength = _uniform(generator, 0, 3).item()
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period)
    wave = torch.sin(phase + warp_strength * warp)
    sharpness = _uniform(generator, 1, 10).item()
    weight = torch.sigmoid(sharpness * wave)[None]
    colours = _random_colours(2, generator, device)
    return torch.lerp(colours[0], colours[1], weight)


def _checker_pattern(height, width, generator, device) -> torch.Tensor:
    """A rotated two-colour checkerboard with soft edges."""
    xs, ys = _pixel_coordinates(height, width, device)
    angle = _uniform(generator, 0, math.pi / 2).item()
    period = _uniform(generator, 8, 48).item()
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    checker = torch.sin(u * (2 * math.pi / period)) * torch.sin(v * (2 * math.pi / period))
    weight = torch.sigmoid(8.0 * checker)[None]
    colours = _random_colours(2, generator, device)
    return torch.lerp(colours[0], colours[1], weight)


def _blob_pattern(height, width, generator, device) -> torch.Tensor:
    """Soft discs of random colours painted over a random base colour."""
    xs, ys = _pixel_coordinates(height, width, device)
    image = _random_colours(1, generator, device)[0].expand(3, height, width).clone()
    count = int(torch.randint(10, 40, (), generator=generator))
    centres_x = (torch.rand(count, generator=generator) * width).tolist()
    centres_y = (torch.rand(count, generator=generator) * height).tolist()
    radii = (_uniform(generator, 0.03, 0.2, (count,)) * max(height, width)).tolist()
    colours = _random_colours(count, generator, device)
    for index in range(count):
        distance = torch.sqrt((xs - centres_x[index]) ** 2 + (ys - centres_y[index]) ** 2)
        coverage = torch.clamp(radii[index] - distance, 0, 1.5) / 1.5
        image = torch.lerp(image, colours[index], coverage[None])
    return image


def _gradient_pattern(height, width, generator, device) -> torch.Tensor:
    """A linear blend of two colours along a random direction, bent by smooth noise."""
    xs, ys = _pixel_coordinates(height, width, device)
    angle = _uniform(generator, 0, 2 * math.pi).item()
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    ramp = ramp - ramp.min()
    ramp = ramp / ramp.max().clamp_min(1e-6)
    bend = 0.3 * fractal_noise(1, height, width, generator, device, octaves=2)[0]
    colours = _random_colours(2, generator, device)
    return torch.lerp(colours[0], colours[1], (ramp + bend).clamp(0, 1)[None])


_PATTERNS = (_noise_pattern, _stripe_pattern, _checker_pattern, _blob_pattern, _gradient_pattern)


def procedural_texture(height: int, width: int, generator: torch.Generator, device) -> torch.Tensor:
    """A random procedural RGB texture `[3, height, width]` in [0, 1].

    One of: coloured fractal noise, stripes, checkerboard, blobs, colour gradient; always with
    added fine-scale coloured noise so that no region is flat.
    """
    pattern = _PATTERNS[int(torch.randint(len(_PATTERNS), (), generator=generator))]
    image = pattern(height, width, generator, device)
    detail_strength = _uniform(generator, 0.08, 0.2).item()
    detail = fractal_noise(
        3,
        height,
        width,
        generator,
        device,
        coarsest_cells=max(height, width) / 32,
        octaves=3,
        persistence=0.8,
    )
    return (image + detail_strength * detail).clamp(0, 1)


def crop_photo(
    image: torch.Tensor,
    height: int,
    width: int,
    generator: torch.Generator,
    min_fraction: float = 0.35,
) -> torch.Tensor:
    """A random crop of `image` resized (antialiased) to `[C, height, width]` float in [0, 1].

    image: uint8 or float `[C, h, w]` (uint8 is scaled by 1/255). The crop has the output's
    aspect ratio and covers between `min_fraction` and all of the largest such box; it is
    flipped horizontally with probability 1/2.
    """
    channels, image_height, image_width = image.shape
    max_crop_width = min(image_width, image_height * width / height)
    crop_width = max_crop_width * _uniform(generator, min_fraction, 1.0).item()
    crop_height = crop_width * height / width
    crop_width_px = max(2, min(image_width, round(crop_width)))
    crop_height_px = max(2, min(image_height, round(crop_height)))
    left = int(torch.randint(image_width - crop_width_px + 1, (), generator=generator))
    top = int(torch.randint(image_height - crop_height_px + 1, (), generator=generator))
    crop = image[:, top : top + crop_height_px, left : left + crop_width_px]
    crop = crop.float() / 255.0 if crop.dtype == torch.uint8 else crop.float()
    resized = F.interpolate(
        crop[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]
    if bool(torch.rand((), generator=generator) < 0.5):
        resized = resized.flip(-1)
    return resized.clamp(0, 1)


def place_cutout(cutout: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A cut-out centred in a transparent square, premultiplied: `[4, size, size]`.

    cutout: uint8 `[4, h, w]` RGBA (straight alpha). The longer side is scaled to about 95% of
    `size` (antialiased, computed on premultiplied colours so edges do not bleed); random
    horizontal flip. Channels 0-2 hold RGB * alpha, channel 3 alpha.
    """
    rgba = cutout.float() / 255.0
    premultiplied = torch.cat([rgba[:3] * rgba[3:], rgba[3:]])
    _, cutout_height, cutout_width = cutout.shape
    scale = 0.95 * size / max(cutout_height, cutout_width)
    new_height = max(1, min(size, round(cutout_height * scale)))
    new_width = max(1, min(size, round(cutout_width * scale)))
    resized = F.interpolate(
        premultiplied[None],
        size=(new_height, new_width),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0]
    if bool(torch.rand((), generator=generator) < 0.5):
        resized = resized.flip(-1)
    canvas = torch.zeros(4, size, size, device=cutout.device)
    top = (size - new_height) // 2
    left = (size - new_width) // 2
    canvas[:, top : top + new_height, left : left + new_width] = resized
    return canvas.clamp(0, 1)


def _polar_grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius and angle `[size, size]` of every pixel centre around the square's centre."""
    xs, ys = _pixel_coordinates(size, size, device)
    centre = (size - 1) / 2
    dx, dy = xs - centre, ys - centre
    return torch.sqrt(dx**2 + dy**2), torch.atan2(dy, dx)


def _star_blob_distance(size, generator, device, radius) -> torch.Tensor:
    """Signed distance-like field (px, negative inside) of a random star-convex blob."""
    rho, phi = _polar_grid(size, device)
    harmonics = int(torch.randint(2, 6, (), generator=generator))
    amplitudes = torch.rand(harmonics, generator=generator)
    amplitudes = amplitudes / amplitudes.sum() * _uniform(generator, 0.1, 0.45).item()
    phases = _uniform(generator, 0, 2 * math.pi, (harmonics,))
    boundary = torch.ones_like(phi)
    for index in range(harmonics):
        frequency = index + 2
        boundary = boundary + amplitudes[index].item() * torch.cos(
            frequency * phi + phases[index].item()
        )
    return rho - radius * boundary / (1 + amplitudes.sum().item())


def _polygon_distance(size, generator, device, radius) -> torch.Tensor:
    """Distance-like field (px, negative inside) of a random regular polygon."""
    rho, phi = _polar_grid(size, device)
    sides = int(torch.randint(3, 9, (), generator=generator))
    rotation = _uniform(generator, 0, 2 * math.pi).item()
    sector = 2 * math.pi / sides
    local = torch.remainder(phi - rotation, sector) - sector / 2
    boundary = radius * math.cos(sector / 2) / torch.cos(local)
    return (rho - boundary) * math.cos(sector / 2)


def _rounded_box_distance(size, generator, device, radius) -> torch.Tensor:
    """Signed distance (px) of a rounded rectangle with a random aspect ratio."""
    xs, ys = _pixel_coordinates(size, size, device)
    centre = (size - 1) / 2
    aspect = _uniform(generator, 0.35, 1.0).item()
    half_x, half_y = radius * 0.9, radius * 0.9 * aspect
    if bool(torch.rand((), generator=generator) < 0.5):
        half_x, half_y = half_y, half_x
    corner = _uniform(generator, 0, 0.5).item() * min(half_x, half_y)
    qx = (xs - centre).abs() - (half_x - corner)
    qy = (ys - centre).abs() - (half_y - corner)
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    inside = torch.maximum(qx, qy).clamp_max(0)
    return outside + inside - corner


def _distance_to_alpha(distance: torch.Tensor) -> torch.Tensor:
    """Antialiased coverage (1 px edge) from a signed distance in pixels."""
    return (0.5 - distance).clamp(0, 1)


def random_shape_mask(size: int, generator: torch.Generator, device) -> torch.Tensor:
    """A random smooth shape's alpha `[1, size, size]` in [0, 1], antialiased, centred.

    Star-convex blob, regular polygon, rounded box, or a union of two blobs; with probability
    0.15 a hole is cut out of it (background then shows through the object).
    """
    radius = 0.46 * size
    kind = int(torch.randint(4, (), generator=generator))
    if kind == 0:
        distance = _star_blob_distance(size, generator, device, radius)
    elif kind == 1:
        distance = _polygon_distance(size, generator, device, radius)
    elif kind == 2:
        distance = _rounded_box_distance(size, generator, device, radius)
    else:
        first = _star_blob_distance(size, generator, device, radius)
        second = _star_blob_distance(size, generator, device, radius * 0.5)
        # the shifted second blob stays inside the square, so rolling never wraps it around
        shift = [
            int(v) for v in torch.randint(-size // 8, size // 8 + 1, (2,), generator=generator)
        ]
        distance = torch.minimum(first, torch.roll(second, shifts=shift, dims=(0, 1)))
    alpha = _distance_to_alpha(distance)
    if bool(torch.rand((), generator=generator) < 0.15):
        hole = _star_blob_distance(
            size, generator, device, radius * _uniform(generator, 0.15, 0.35).item()
        )
        alpha = alpha * (1 - _distance_to_alpha(hole))
    return alpha[None]


def prefilter_for_minification(texture: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Blur `texture` `[C, h, w]` so that drawing it at `min_scale` screen pixels per texture
    pixel (or larger) does not alias.

    Gaussian with sigma = 0.5 * sqrt(1 / min_scale**2 - 1) texture pixels (none when that is
    below 0.25 px), separable, reflect padding.
    """
    sigma = 0.5 * math.sqrt(max(0.0, 1.0 / min_scale**2 - 1.0))
    if sigma < 0.25:
        return texture
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=texture.dtype, device=texture.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = texture.shape[0]
    image = F.pad(texture[None], (radius, radius, radius, radius), mode="reflect")
    image = F.conv2d(image, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    image = F.conv2d(image, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return image[0]
