"""Near duplicates from fingerprints: perceptual-hash candidates, each checked on the pictures themselves.

Candidates (`candidates`, exact all-pairs search on the 64-bit hashes of `fingerprints`):
- two images of the same size (a recompressed or brightened copy keeps it): pHash distance <= `threshold`
  (default fingerprints.NEAR_THRESHOLD) and dHash distance <= fingerprints.DHASH_THRESHOLD;
- two images of different sizes (resized, cropped): pHash <= RESIZED_PHASH and dHash <= RESIZED_DHASH, of
  the whole images or of one image's whole against the other's centre crop (`fingerprints.CENTRE`), either
  way round. A crop of 2-10% of a 32-pixel picture moves its pHash by up to ~20 bits (benchmarks/RESULTS.md),
  hence the looser thresholds; these pairs are rare in data of one size and are verified like the rest.

Verification (`verify`): the hashes agree by chance on some data (28-pixel objects centred on black:
Fashion-MNIST), so each candidate is kept only when the detail of the two pictures correlates: both grey
thumbnails are area-averaged to the side both images have (the shorter side of the smaller one, at most
fingerprints.GREY_SIDE), their coarse shading is removed (minus a Gaussian blur of sigma side/DETAIL_DIVISOR)
and the normalised cross-correlation (Pearson's r of the pixels) is taken. That r is unchanged by a
brightness or contrast change (an affine map of the grey levels); averaging to the smaller side discards
what a downscale or JPEG recompression removed; without the coarse shading, two different garments of the
same outline no longer correlate by their silhouette alone. For pairs of different sizes, crops of one
picture (CROP_SCALES of its side at CROP_POSITIONS x CROP_POSITIONS places) are also tried against the other,
both ways, and the best r is kept. Same-size pairs are compared as they are (a crop changes the size; a
crop scaled back to the original size, as in CIFAR-10's own near duplicates, passes only while its detail
still correlates at the threshold that `find` chooses: they score 0.5-1.0).
"""

from __future__ import annotations

import numpy as np

from pipeline.data import fingerprints

VERIFY_LADDER = (0.7, 0.8, 0.85, 0.9, 0.93, 0.96)  # lowest detail correlation of a near duplicate: see `find`
LOOK_ALIKE_SHARE = 0.1  # a threshold leaving more images than this share (and LOOK_ALIKE_MIN) in pairs
LOOK_ALIKE_MIN = 100  # counts look-alikes, not copies (a few duplicates in a small folder prove nothing)
RESIZED_PHASH = 18  # pHash bits of 64 for candidates of different sizes (whole or centre crop)
RESIZED_DHASH = 24  # dHash bits of 64 for them
DETAIL_DIVISOR = 12  # the blur removed has sigma = comparison side / this (32 px: 2.7 px)
MIN_SIDE = 8  # pixels: the smallest comparison side
CROP_SCALES = (0.95, 0.9)  # crops tried for pairs of different sizes (side of the crop over the image's)
CROP_POSITIONS = 7  # places per axis of each crop (steps of 0.8 px or less at 32 px)
_FLAT = 1.0  # grey levels: a detail norm below this is a uniform picture, which correlates with nothing
_BLOCK_ELEMENTS = 4_000_000  # hash XORs per search block (32 MB of uint64)
_PAIR_BLOCK = 256  # pairs verified at a time (crops: ~100 MB of float32 work arrays)


def _search(rows_hashes, columns_hashes, rule, *, same_only_diagonal: bool):
    """Blocked all-pairs search: yields (rows, columns, dHash distance, pHash distance) of the pairs that
    rule(start, stop, pHash distances of rows start..stop) selects."""
    (row_phash, row_dhash), (column_phash, column_dhash) = rows_hashes, columns_hashes
    count = len(row_phash)
    block = max(1, _BLOCK_ELEMENTS // max(len(column_phash), 1))
    for start in range(0, count, block):
        stop = min(start + block, count)
        distance = fingerprints.hamming(row_phash[start:stop, None], column_phash[None, :])
        rows, columns = rule(start, stop, distance)
        rows, columns = rows + start, columns
        keep = columns > rows if same_only_diagonal else columns != rows
        rows, columns = rows[keep], columns[keep]
        yield (
            rows,
            columns,
            fingerprints.hamming(row_dhash[rows], column_dhash[columns]),
            distance[rows - start, columns],
        )


def candidates(prints, *, threshold: int = fingerprints.NEAR_THRESHOLD) -> np.ndarray:
    """Candidate pairs of near duplicates (see the module docstring for the rules).

    Args:
        prints: `fingerprints.Fingerprints`.
        threshold: pHash bits of 64 for two images of the same size.
    Returns:
        int64 [P, 3]: i < j, and the pHash distance of the hashes that matched; one row per pair.
    """
    height, width = prints.height, prints.width
    loose = max(threshold, RESIZED_PHASH)

    def whole(start, stop, distance):
        same = (height[start:stop, None] == height[None, :]) & (width[start:stop, None] == width[None, :])
        return np.nonzero(np.where(same, distance <= threshold, distance <= loose))

    def crop(start, stop, distance):
        other = (height[start:stop, None] != height[None, :]) | (width[start:stop, None] != width[None, :])
        return np.nonzero(other & (distance <= RESIZED_PHASH))

    found = []
    hashes = (prints.phash, prints.dhash)
    for rows, columns, dhash, phash in _search(hashes, hashes, whole, same_only_diagonal=True):
        same = (height[rows] == height[columns]) & (width[rows] == width[columns])
        keep = np.where(same, dhash <= fingerprints.DHASH_THRESHOLD, dhash <= RESIZED_DHASH)
        found.append(np.stack([rows[keep], columns[keep], phash[keep]], axis=1))
    if len(height) and (np.any(height != height[0]) or np.any(width != width[0])):
        centre = (prints.phash_centre, prints.dhash_centre)
        for rows, columns, dhash, phash in _search(hashes, centre, crop, same_only_diagonal=False):
            keep = dhash <= RESIZED_DHASH
            first, second = np.minimum(rows, columns)[keep], np.maximum(rows, columns)[keep]
            found.append(np.stack([first, second, phash[keep]], axis=1))
    pairs = np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), np.int64)
    if len(pairs):  # a pair may match several ways: one row each, the smallest distance
        pairs = pairs[np.lexsort((pairs[:, 2], pairs[:, 1], pairs[:, 0]))]
        first = np.ones(len(pairs), bool)
        first[1:] = np.any(pairs[1:, :2] != pairs[:-1, :2], axis=1)
        pairs = pairs[first]
    return pairs


def _area_operator(side: int, size: int, offset: float, scale: float) -> np.ndarray:
    """float32 [size, side]: row k averages the input pixels under [offset + scale*k/size, offset +
    scale*(k+1)/size] (fractions of the side), weighted by overlap (area resampling of a crop)."""
    edges = (offset + scale * np.arange(size + 1) / size) * side
    low, high = edges[:-1, None], edges[1:, None]
    pixels = np.arange(side)[None, :]
    overlap = np.clip(np.minimum(high, pixels + 1) - np.maximum(low, pixels), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _blur_operator(size: int) -> np.ndarray:
    """float32 [size, size]: a Gaussian blur of sigma size/DETAIL_DIVISOR, rows renormalised at the edges."""
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    weights = np.exp(-0.5 * (offsets / (size / DETAIL_DIVISOR)) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _detail(pictures: np.ndarray, rows: np.ndarray, columns: np.ndarray, blur: np.ndarray) -> np.ndarray:
    """float32 [B, S, S] -> [B, K*K]: resampled by rows @ x @ columns.T, minus its blur, zero mean, unit norm
    (a uniform picture, norm < _FLAT, gives ~zeros)."""
    resampled = rows @ pictures @ columns.T
    flat = (resampled - blur @ resampled @ blur.T).reshape(len(pictures), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), _FLAT)


def _crop_operators(side: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per crop scale, (resampling, blurred resampling) operators float32 [CROP_POSITIONS * size, side]: the
    CROP_POSITIONS crops along one axis stacked, so that one product R @ x @ R.T resamples every crop place
    (rows x columns) of a picture at once, and the same with the blur folded in."""
    blur = _blur_operator(size)
    operators = []
    for scale in CROP_SCALES:
        places = [_area_operator(side, size, offset, scale) for offset in np.linspace(0, 1 - scale, CROP_POSITIONS)]
        operators.append((np.concatenate(places), np.concatenate([blur @ place for place in places])))
    return operators


def _resample(pictures: np.ndarray, operator: np.ndarray) -> np.ndarray:
    """operator @ x @ operator.T for each x of [B, S, S], as two large matrix products: [B, M, M]."""
    count, side = pictures.shape[0], pictures.shape[1]
    rows = operator @ pictures.transpose(1, 0, 2).reshape(side, count * side)  # [M, B*S]
    rows = rows.reshape(-1, count, side).transpose(1, 0, 2).reshape(-1, side)  # [B*M, S]
    return (rows @ operator.T).reshape(count, operator.shape[0], operator.shape[0])


def _best_crop(pictures: np.ndarray, other: np.ndarray, operators, size: int) -> np.ndarray:
    """float32 [B]: the best correlation of any crop of `pictures` [B, S, S] with `other` [B, size*size]
    (zero mean, unit norm, so the correlation is sum(crop * other) / |crop - mean(crop)|)."""
    best = np.full(len(pictures), -1.0, np.float32)
    other = other.reshape(len(pictures), size, size)
    for stacked, blurred in operators:
        detail = _resample(pictures, stacked) - _resample(pictures, blurred)  # [B, P*size, P*size]
        detail = detail.reshape(len(pictures), CROP_POSITIONS, size, CROP_POSITIONS, size)
        products = np.einsum("bpkql,bkl->bpq", detail, other)
        sums, squares = detail.sum(axis=(2, 4)), np.einsum("bpkql,bpkql->bpq", detail, detail)
        norms = np.maximum(np.sqrt(np.maximum(squares - sums**2 / size**2, 0.0)), _FLAT)
        best = np.maximum(best, (products / norms).reshape(len(pictures), -1).max(axis=1))
    return best


def verify(grey: np.ndarray, height: np.ndarray, width: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Detail correlation of each candidate pair (see the module docstring).

    Args:
        grey: uint8 [N, S, S] grey thumbnails (`Fingerprints.grey`); height, width: int [N], the image sizes.
        pairs: int [P, >=2], rows (i, j, ...).
    Returns:
        float32 [P] in -1..1; pairs of different sizes: the best over the crops tried.
    """
    pairs = np.asarray(pairs, np.int64)
    if len(pairs) == 0:
        return np.zeros(0, np.float32)
    side = grey.shape[-1]
    shorter = np.minimum(height, width)
    first, second = pairs[:, 0], pairs[:, 1]
    sizes = np.clip(np.minimum(shorter[first], shorter[second]), MIN_SIDE, side) // 4 * 4
    resized = (height[first] != height[second]) | (width[first] != width[second])
    scores = np.zeros(len(pairs), np.float32)
    for size in np.unique(sizes):
        whole, blur = _area_operator(side, int(size), 0.0, 1.0), _blur_operator(int(size))
        # Same size: one comparison each, from per-image vectors (float16: 2 KB per image at 32 px).
        chosen = np.nonzero((sizes == size) & ~resized)[0]
        images = np.unique(pairs[chosen, :2])
        vectors = np.concatenate(
            [
                _detail(grey[images[start : start + _PAIR_BLOCK]].astype(np.float32), whole, whole, blur)
                for start in range(0, len(images), _PAIR_BLOCK)
            ]
            or [np.zeros((0, int(size) ** 2), np.float32)]
        ).astype(np.float16)
        for start in range(0, len(chosen), 64 * _PAIR_BLOCK):
            block = chosen[start : start + 64 * _PAIR_BLOCK]
            a = vectors[np.searchsorted(images, first[block])].astype(np.float32)
            b = vectors[np.searchsorted(images, second[block])].astype(np.float32)
            scores[block] = np.sum(a * b, axis=1)
        # Different sizes: also every crop tried, both ways (these pairs are few).
        crops = _crop_operators(side, int(size))
        chosen = np.nonzero((sizes == size) & resized)[0]
        for start in range(0, len(chosen), _PAIR_BLOCK):
            block = chosen[start : start + _PAIR_BLOCK]
            a, b = grey[first[block]].astype(np.float32), grey[second[block]].astype(np.float32)
            a_whole, b_whole = _detail(a, whole, whole, blur), _detail(b, whole, whole, blur)
            best = np.sum(a_whole * b_whole, axis=1)
            best = np.maximum(best, _best_crop(a, b_whole, crops, int(size)))
            scores[block] = np.maximum(best, _best_crop(b, a_whole, crops, int(size)))
    return scores


def find(prints, *, threshold: int = fingerprints.NEAR_THRESHOLD, min_correlation: float | None = None):
    """Verified near-duplicate pairs of fingerprinted images.

    The verification threshold, unless given, is the lowest of VERIFY_LADDER that leaves at most
    LOOK_ALIKE_SHARE of the images (or LOOK_ALIKE_MIN) in a pair other than an exact copy (else the last). Measured (benchmarks/RESULTS.md, round 2): the
    planted copies on CIFAR-10 score 0.93-1.0; CIFAR-10's own near duplicates (one photo re-cropped,
    re-coloured, re-shot) 0.5-1.0, and its candidates above 0.7 are nearly all such; on Fashion-MNIST,
    different garments of one outline score up to ~0.97, and 0.7 would leave most images in pairs.

    Returns:
        (pairs int64 [K, 3]: i < j and the pHash distance, correlations float32 [K],
        {"candidates": the candidate count, "min_correlation": the threshold used}).
    """
    proposed = candidates(prints, threshold=threshold)
    correlation = verify(prints.grey, prints.height, prints.width, proposed)
    first, second = proposed[:, 0], proposed[:, 1]
    copies = (prints.exact[first] == prints.exact[second]) & (prints.height[first] == prints.height[second])
    copies &= prints.width[first] == prints.width[second]
    for lowest in VERIFY_LADDER if min_correlation is None else (min_correlation,):
        kept = correlation >= lowest
        if len(np.unique(proposed[kept & ~copies, :2])) <= max(LOOK_ALIKE_SHARE * len(prints.grey), LOOK_ALIKE_MIN):
            break  # (pairs of identical pixels are copies, whatever their number: not counted)
    return proposed[kept], correlation[kept], {"candidates": len(proposed), "min_correlation": lowest}
