"""GazeDataset: reads what the generator wrote, splits correctly, and fails clearly on bad files."""

import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from HeadNeRF.data.dataset import GazeDataset
from HeadNeRF.data.layout import DataFormatError, Split, read_row, subject_file_name


def test_reads_what_was_written(tiny_dataset):
    ds = GazeDataset(tiny_dataset, "all")
    assert len(ds) == 2 * 4 * 3
    item = ds[5]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["head_mask"].shape == (1, 64, 64) and set(item["head_mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["lm2d"].shape == (68, 2) and item["iris2d"].shape == (2, 2)
    assert item["shape_code"].shape == (ds.shape_code_dim,)
    assert item["appearance_code"].shape == (ds.appearance_code_dim,)
    sid, row = ds.rows[5][:2]
    with h5py.File(os.path.join(tiny_dataset, subject_file_name(sid))) as f:
        assert torch.equal(item["image"], torch.from_numpy(f["face_patch"][row]).permute(2, 0, 1).float() / 255)
        assert np.allclose(item["gaze"].numpy(), f["face_gaze"][row])
        assert np.allclose(item["K"].numpy(), f["cam_K"][row])


def test_read_row_matches_the_dataset(tiny_dataset):
    ds = GazeDataset(tiny_dataset, "all")
    sid, row = ds.rows[7][:2]
    path = os.path.join(tiny_dataset, subject_file_name(sid))
    got = read_row(path, row, ("latent_code", "cam_K"))
    item = ds[7]
    code = torch.cat((item["shape_code"], item["appearance_code"]))  # the synthetic layout: shape blocks, then appearance
    assert got["latent_code"].dtype == np.float32 and np.array_equal(got["latent_code"], code.numpy())
    assert np.allclose(got["cam_K"], item["K"].numpy())
    assert got["image_size"] == 64 and got["source"] == "synthetic" and got["supersample"] >= 1
    assert set(read_row(path, 0)) == {"source", "supersample", "image_size"}  # no keys: the file's attributes only


def test_cached_items_equal_fresh_reads_and_are_read_once(tiny_dataset, monkeypatch):
    plain = GazeDataset(tiny_dataset, "all", image_size=32, with_template=True)
    cached = GazeDataset(tiny_dataset, "all", image_size=32, with_template=True, cache_items=True)
    reads = []
    read = cached._read_item
    monkeypatch.setattr(cached, "_read_item", lambda i: reads.append(i) or read(i))
    for i in (3, 7, 3, 7, 3):
        item, fresh = cached[i], plain[i]
        assert item.keys() == fresh.keys()
        assert all(torch.equal(item[k], fresh[k]) for k in item)
    assert reads == [3, 7]  # each row read from HDF5 once
    cached[3]["image"] = None  # a caller's changes to the returned dict do not reach the cache
    assert torch.equal(cached[3]["image"], plain[3]["image"])
    batch = torch.utils.data.default_collate([cached[3], cached[7]])  # collate copies: the cache stays untouched
    batch["image"].zero_()
    assert torch.equal(cached[3]["image"], plain[3]["image"])


def test_split_partitions_rows(tiny_dataset):
    split = Split.load(tiny_dataset)
    train, val, test = (GazeDataset(tiny_dataset, w) for w in ("train", "val", "test"))
    key = lambda ds: {(r[0], r[1]) for r in ds.rows}  # noqa: E731
    assert not key(train) & key(val) and not (key(train) | key(val)) & key(test)
    assert len(train) + len(val) + len(test) == len(GazeDataset(tiny_dataset, "all"))
    assert {r[0] for r in test.rows} == set(split.test_subjects)
    for r in train.rows:
        assert r[2] not in split.heldout_cameras and r[3] not in split.heldout_frames


def test_resize_scales_intrinsics_and_landmarks(tiny_dataset):
    big, small = GazeDataset(tiny_dataset, "all"), GazeDataset(tiny_dataset, "all", image_size=32)
    a, b = big[0], small[0]
    assert b["image"].shape == (3, 32, 32)
    assert torch.allclose(b["K"][:2], a["K"][:2] / 2) and torch.allclose(b["lm2d"], a["lm2d"] / 2)


def test_template_is_most_frontal_gaze_of_same_camera(tiny_dataset):
    ds = GazeDataset(tiny_dataset, "train", with_template=True)
    item = ds[0]
    assert item["template_image"].shape == item["image"].shape


def test_dataloader_workers(tiny_dataset):
    ds = GazeDataset(tiny_dataset, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(len(b["image"]) for b in batches) == len(ds)


def _copy(tiny_dataset, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(tiny_dataset, d)
    return str(d), str(d / subject_file_name(0))


def _one_line_error(dataset_dir) -> str:
    with pytest.raises(DataFormatError) as info:
        GazeDataset(dataset_dir, "all")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_truncated_file(tiny_dataset, tmp_path):
    d, path = _copy(tiny_dataset, tmp_path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    msg = _one_line_error(d)
    assert path in msg and "key" in msg


def test_missing_face_gaze(tiny_dataset, tmp_path):
    d, path = _copy(tiny_dataset, tmp_path)
    with h5py.File(path, "a") as f:
        del f["face_gaze"]
    msg = _one_line_error(d)
    assert path in msg and "'face_gaze'" in msg and "no such key" in msg


def test_3d_face_patch(tiny_dataset, tmp_path):
    d, path = _copy(tiny_dataset, tmp_path)
    with h5py.File(path, "a") as f:
        gray = f["face_patch"][..., 0]
        del f["face_patch"]
        f["face_patch"] = gray
    msg = _one_line_error(d)
    assert path in msg and "'face_patch'" in msg and "3-D" in msg


def test_wrong_dtype_and_out_of_range(tiny_dataset, tmp_path):
    d, path = _copy(tiny_dataset, tmp_path)
    with h5py.File(path, "a") as f:
        f["face_gaze"][0] = [np.nan, 0.0]
    msg = _one_line_error(d)
    assert "'face_gaze'" in msg and "finite" in msg


def test_invalid_rows_are_skipped(tiny_dataset, tmp_path):
    d, path = _copy(tiny_dataset, tmp_path)
    n_before = len(GazeDataset(d, "all"))
    with h5py.File(path, "a") as f:
        f["valid_mask"][0] = False
    assert len(GazeDataset(d, "all")) == n_before - 1


def test_missing_dir_and_split(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        GazeDataset(str(tmp_path / "nothing"))
    with pytest.raises(DataFormatError, match="split"):
        GazeDataset(str(tmp_path))
