"""File discovery and decoding: audio to mono float32 at a requested rate, images to RGB.

Decoding never uses torchaudio's native library: WAV/FLAC/OGG (and MP3 where libsndfile
supports it) go through soundfile, resampling through a polyphase filter (scipy). Every
failure raises :class:`freebind.util.errors.MediaError` naming the file and the reason.
"""

from __future__ import annotations

import heapq
import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from freebind.util.errors import MediaError
from freebind.util.text import first_line
from freebind.util.vocab import EXTENSION_MODALITIES, modality_of


def discover(paths: Iterable[str | os.PathLike],
             as_modality: str | None = None,
             ignored: "list | Ignored | None" = None) -> dict[str, Sequence[Path]]:
    """Walk files and folders; group media files by modality, each sorted (path order).

    Without ``as_modality`` the modality comes from the extension (files with other
    extensions are left out, and appended to ``ignored`` when given, a list or an
    :class:`Ignored`; hidden files, ``.name``, are not counted) and the result has a
    (possibly empty) sequence for each of :data:`EXTENSION_MODALITIES`. With it, every file
    given and every file under a folder given (except hidden ones) is of that modality:
    ``{as_modality: [...]}``.

    The files are walked folder by folder, names sorted, so they come in path order
    without being gathered first, and are packed as they come
    (:class:`~freebind.data.items.ItemList` of paths: no object per file): a folder of
    millions of files is a few bytes a file. Symbolic links to folders are not followed;
    a dangling one is kept (it is reported as skipped, "no such file (a dangling symbolic
    link)", never silently left out)."""
    from freebind.data.items import ItemList, StringArrayBuilder

    mods = [as_modality] if as_modality is not None else list(EXTENSION_MODALITIES)
    found = {m: StringArrayBuilder() for m in mods}
    streams = []
    for root in paths:
        root = Path(root)
        if root.is_file():
            streams.append(iter([str(root)]))
        elif root.is_dir():
            streams.append(_walk(str(root), skip_hidden=as_modality is not None))
        else:
            link = " (a dangling symbolic link)" if root.is_symlink() else ""
            raise MediaError(f"{root}: no such file or folder{link}")
    merged = iter(()) if not streams else streams[0] if len(streams) == 1 else \
        heapq.merge(*streams, key=lambda s: Path(s).parts)
    last = None
    for f in merged:
        if f == last:   # the same file under two of the paths given
            continue
        last = f
        m = as_modality if as_modality is not None else modality_of(f)
        if m is not None:
            found[m].append(f)
        elif ignored is not None and not os.path.basename(f).startswith("."):
            ignored.append(Path(f))
    return {m: ItemList(b.build(), None, "path") for m, b in found.items()}


def _walk(root: str, skip_hidden: bool) -> Iterator[str]:
    """The files under folder ``root`` (and dangling symbolic links), in path order: each
    folder's entries sorted by name, a sub-folder's files at its name's place (``a/b/x``
    before ``a/b.txt``, as paths compare); symbolic links to folders are not followed;
    ``skip_hidden``: names starting with a dot, and what is under them, are left out."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if skip_hidden and e.name.startswith("."):
            continue
        path = e.name if root == "." else os.path.join(root, e.name)   # as Path("." / x)
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk(path, skip_hidden)
            elif e.is_file() or (e.is_symlink() and not os.path.exists(path)):
                yield path
        except OSError:
            continue


class Ignored:
    """Files left out for an unknown extension: how many (``len``) and the first ``keep``
    of them in path order (``examples``), not a list of every one."""

    def __init__(self, keep: int = 5):
        self.count, self.keep, self.examples = 0, int(keep), []

    def append(self, path) -> None:
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(path)

    def __len__(self) -> int:
        return self.count


def resample(wave: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal (deterministic)."""
    if src_rate == dst_rate:
        return wave.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(dst_rate, src_rate).limit_denominator(1000)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def load_audio(path: str | os.PathLike, rate: int, mono: bool = True,
               resampler=None, length: int | None = None) -> np.ndarray:
    """Decode ``path`` to a float32 signal in [-1, 1] at ``rate`` Hz.

    ``mono=True``: channels are averaged, the result is ``[samples]``; ``mono=False``:
    ``[channels, samples]``. ``resampler(wave, src_rate, dst_rate)`` resamples along the last
    axis (default :func:`resample`, polyphase); the real encoders pass the resampler of their
    reference pipeline. An empty file is an error, and so is a WAV file whose header promises
    more samples than it holds (a cut download).

    The header is checked first against :func:`freebind.data.audio_limits.current` (rate,
    channels, length, samples decoded) and the file is read in blocks. ``length`` (samples
    at ``rate``, with the default resampler): only the frames of the centre ``length``
    samples are read (seeking), the same numbers ``fit_length(load_audio(…), length)``
    gives from the whole file."""
    must_exist(path)
    short = wav_shortfall(path)
    if short is not None:
        raise MediaError(f"{path}: truncated WAV: the header promises {short[0]} bytes of "
                         f"samples, the file holds {short[1]}")
    from freebind.data.audio_limits import decode

    try:
        wave, src_rate, skip = decode(_source(path), path, rate, mono, length,
                                      window=resampler is None)
    except MediaError:
        raise
    except Exception as exc:  # soundfile raises several types; all mean "cannot decode"
        raise MediaError(f"{path}: cannot decode audio ({first_line(exc)})") from None
    if wave.shape[-1] == 0:
        raise MediaError(f"{path}: audio has no samples")
    if not np.isfinite(wave).all():
        raise MediaError(f"{path}: audio contains NaN or infinite samples")
    if int(src_rate) != rate and resampler is None:
        wave = np.stack([resample(ch, int(src_rate), rate) for ch in wave]) if not mono \
            else resample(wave, int(src_rate), rate)
    elif int(src_rate) != rate:
        wave = np.asarray(resampler(wave, int(src_rate), rate), dtype=np.float32)
    wave = wave.astype(np.float32, copy=False)
    return wave[..., skip:skip + length] if skip else wave


class AudioFile:
    """An open audio file whose header passed the current limits
    (:func:`freebind.data.audio_limits.current`): ``rate``, ``channels``, ``frames`` (None
    when the header does not know) and readers of the frames a space uses, so a space that
    needs a few clips never decodes the rest. Every read is float32, mono (the channels'
    mean) or ``[channels, frames]``, checked for NaN and infinities; decoding errors are
    MediaErrors naming the file. Made by :func:`open_audio`."""

    def __init__(self, handle, where, mono: bool):
        from freebind.data.audio_limits import current

        self._f, self.where, self.mono = handle, where, mono
        self.limits = current()
        self.rate, self.channels = int(handle.samplerate), int(handle.channels)
        frames = int(handle.frames)
        self.frames = frames if 0 < frames < 1 << 62 else None
        self.limits.check(where, self.rate, self.channels, self.frames)
        self.held = 0   # frames × channels kept by :meth:`read` so far

    def read(self, start: int, count: int) -> np.ndarray:
        """``count`` frames from ``start`` (seeking there; fewer when the file ends first).
        The samples of all reads of this file together are held to the limits'
        ``max_samples``."""
        from freebind.data.audio_limits import read_frames

        kept = 1 if self.mono else self.channels
        self.held += count * kept
        self.limits.check_samples(self.where, self.held // kept, kept)
        return self._checked(lambda: read_frames(self._f, start, count, self.mono))

    def blocks(self, start: int = 0):
        """The frames from ``start`` to the end, :data:`~freebind.data.audio_limits.BLOCK`
        at a time (one block held at once: not counted against ``max_samples``; the header's
        length is within ``max_seconds``)."""
        from freebind.data.audio_limits import BLOCK, read_frames

        if self.frames is None:
            raise MediaError(f"{self.where}: the audio header gives no length")
        at = start          # seek once, then read on
        while at < self.frames:
            block = self._checked(lambda: read_frames(self._f, start if at == start else 0,
                                                      min(BLOCK, self.frames - at), self.mono))
            if block.shape[-1] == 0:
                return
            yield block
            at += block.shape[-1]

    def _checked(self, read) -> np.ndarray:
        try:
            wave = read()
        except MediaError:
            raise
        except Exception as exc:  # soundfile raises several types; all mean "cannot decode"
            raise MediaError(f"{self.where}: cannot decode audio ({first_line(exc)})") from None
        if not np.isfinite(wave).all():
            raise MediaError(f"{self.where}: audio contains NaN or infinite samples")
        return wave


@contextmanager
def open_audio(path: str | os.PathLike, mono: bool = True):
    """``with open_audio(path) as f``: an :class:`AudioFile` (header checked against the
    limits before any sample is decoded; a truncated WAV refused as :func:`load_audio`
    does)."""
    short = wav_shortfall(path)
    if short is not None:
        raise MediaError(f"{path}: truncated WAV: the header promises {short[0]} bytes of "
                         f"samples, the file holds {short[1]}")
    import soundfile as sf

    try:
        handle = sf.SoundFile(_source(path))
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode audio ({first_line(exc)})") from None
    try:
        yield AudioFile(handle, path, mono)
    finally:
        handle.close()


def wav_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(promised, held)`` bytes of a RIFF/WAVE file's ``data`` chunk when the file holds
    fewer than its header says; None for a complete WAV or any other file. Reads only the
    chunk headers. A size of 0 or 0xFFFFFFFF (written by streaming recorders) is not
    checked; an object that is not a path (a tar member's bytes) is not checked."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                n = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    held = size - pos - 8
                    return (n, held) if 0 < n < 0xFFFFFFFF and n > held else None
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def load_image(path: str | os.PathLike):
    """Decode ``path`` to an RGB ``PIL.Image`` (fully loaded, so truncation is caught)."""
    must_exist(path)
    try:
        from PIL import Image

        with Image.open(_source(path)) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode image ({first_line(exc)})") from None


def read_texts(path: str | os.PathLike) -> list[str]:
    """One text per non-empty line (UTF-8), surrounding whitespace stripped."""
    return list(iter_texts(path))


#: what ``str.splitlines`` breaks lines at
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def iter_texts(path: str | os.PathLike, block_chars: int = 1 << 20) -> Iterator[str]:
    """The texts of :func:`read_texts`, streamed ``block_chars`` characters at a time (a
    texts file of millions of lines is never held whole); a file that cannot be read or
    decoded raises :class:`MediaError` while iterating."""
    rest = ""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            while True:
                chunk = fh.read(block_chars)
                if not chunk:
                    break
                text = rest + chunk
                parts = text.splitlines()
                rest = "" if text[-1] in LINE_BREAKS else parts.pop()
                yield from (t.strip() for t in parts if t.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: cannot read texts ({first_line(exc)})") from None
    if rest.strip():
        yield rest.strip()


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Deterministic length policy: centre-crop long signals, zero-pad short ones at the end."""
    n = wave.shape[0]
    if n >= length:
        start = (n - length) // 2
        return wave[start:start + length]
    return np.pad(wave, (0, length - n))


def must_exist(path) -> None:
    """A path that is not there is "no such file" (a dangling symbolic link says so), not a
    file that cannot be decoded; a tar member or table cell (not a path) passes."""
    from freebind.data.readers import open_member

    if not isinstance(path, (str, os.PathLike)) or os.path.exists(path) or \
            open_member(path) is not None:
        return
    link = " (a dangling symbolic link)" if os.path.islink(path) else ""
    raise MediaError(f"{path}: no such file{link}")


def _source(path):
    """What a decoder opens: the path, or a file object over the bytes of a medium stored
    in a tar shard or a table (:class:`freebind.data.readers.Member`, or its locator string)."""
    from freebind.data.readers import open_member

    got = open_member(path)
    return str(path) if got is None else got


# --- ImageBind's extra modalities: video, single-channel maps (depth, thermal), IMU ----------

def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """``(frame count, average frame rate)`` of a video file's first video stream (PyAV; no
    system ffmpeg needed). The count comes from the container, else from its packets."""
    container, stream = _open_video(path)
    try:
        fps = stream.average_rate or stream.guessed_rate
        n = int(stream.frames or 0)
        if n <= 0:
            n = sum(1 for p in container.demux(stream) if p.size)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode video ({first_line(exc)})") from None
    finally:
        container.close()
    if not fps or float(fps) <= 0:
        raise MediaError(f"{path}: video has no frame rate")
    if n <= 0:
        raise MediaError(f"{path}: video has no frames")
    return n, float(fps)


def load_video_frames(path: str | os.PathLike, indices) -> np.ndarray:
    """The frames at ``indices`` (decode order) as uint8 RGB ``[len(indices), H, W, 3]``.

    Frames are decoded once, in order, keeping only those asked for. An index past the last
    frame that actually decodes (containers sometimes over-count) gets the last frame."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted or wanted[0] < 0:
        raise MediaError(f"{path}: no valid frame indices requested")
    want = set(wanted)
    container, stream = _open_video(path)
    kept: dict[int, np.ndarray] = {}
    last = None
    try:
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                kept[i] = frame.to_ndarray(format="rgb24")
            last = (i, frame)
            if i >= wanted[-1]:
                break
        if last is not None and last[0] not in kept:
            kept[last[0]] = last[1].to_ndarray(format="rgb24")
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode video ({first_line(exc)})") from None
    finally:
        container.close()
    if last is None:
        raise MediaError(f"{path}: video has no decodable frames")
    final = last[0]
    return np.stack([kept[min(int(i), final)] for i in indices])


def _open_video(path):
    try:
        import av
    except ImportError:
        raise MediaError(f"{path}: cannot decode video: PyAV is not installed "
                         "(pip install av, or 'freebind[imagebind]')") from None
    try:
        container = av.open(_source(path))
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode video ({first_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    return container, container.streams.video[0]


def load_single_channel(path: str | os.PathLike, normalise: bool = False) -> np.ndarray:
    """A single-channel map (depth/disparity, thermal) as float32 ``[H, W]``.

    Grey images (8/16/32-bit, float) and ``.npy`` arrays are read as they are; an RGB image
    is accepted only when its three channels are equal (a colour-mapped visualisation is
    refused). ``normalise`` divides integer images by their type's maximum (255, 65535)."""
    if Path(path).suffix.lower() == ".npy":
        arr = _load_npy(path)
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise MediaError(f"{path}: expected a 2-D map, got shape {tuple(arr.shape)}")
        scale = 1.0
    else:
        try:
            from PIL import Image

            with Image.open(_source(path)) as img:
                img.load()
                mode = img.mode
                if mode in ("P", "LA", "RGBA", "PA"):
                    img = img.convert("RGB")
                    mode = "RGB"
                arr = np.asarray(img)
        except Exception as exc:
            raise MediaError(f"{path}: cannot decode image ({first_line(exc)})") from None
        if arr.ndim == 3:
            if not (np.array_equal(arr[..., 0], arr[..., 1])
                    and np.array_equal(arr[..., 0], arr[..., 2])):
                raise MediaError(f"{path}: expected a single-channel image, got colour "
                                 f"({mode}); save the raw map as a grey PNG or .npy")
            arr = arr[..., 0]
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype, 1.0)
        if mode.startswith("I;16"):
            scale = 65535.0
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise MediaError(f"{path}: map contains NaN or infinite values")
    if min(out.shape) == 0:
        raise MediaError(f"{path}: map is empty")
    return out / scale if normalise and scale != 1.0 else out


def load_imu(path: str | os.PathLike, channels: int = 6) -> np.ndarray:
    """An IMU recording from ``.npy`` as float32 ``[channels, T]`` (``[T, channels]`` is
    transposed): accelerometer x, y, z then gyroscope x, y, z."""
    arr = _load_npy(path)
    if arr.ndim != 2 or channels not in arr.shape:
        raise MediaError(f"{path}: expected an IMU array of shape ({channels}, T), got "
                         f"{tuple(arr.shape)}")
    if arr.shape[0] != channels:
        arr = arr.T
    if arr.shape[1] == 0:
        raise MediaError(f"{path}: IMU array has no samples")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise MediaError(f"{path}: IMU array contains NaN or infinite values")
    return out


def _load_npy(path) -> np.ndarray:
    try:
        arr = np.load(_source(path), allow_pickle=False)
    except Exception as exc:
        raise MediaError(f"{path}: cannot read array ({first_line(exc)})") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise MediaError(f"{path}: not a numeric array")
    return arr


# --- 3D point clouds and meshes (freebind.data.points) ---------------------------------------

def load_points(path: str | os.PathLike, n_points: int) -> np.ndarray:
    """A point cloud or mesh as float32 ``[n_points, 6]`` (xyz in the unit sphere, rgb in
    [0, 1]); see :func:`freebind.data.points.load_points`."""
    from freebind.data.points import load_points as _load_points

    return _load_points(path, n_points)
