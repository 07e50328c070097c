"""Atomic writes, Zarr stores (dtype round trips), model folders and views."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightspace import layers
from weightspace.extract import extract_model
from weightspace.io import atomic_path
from weightspace.store import ModelStore, check_tensor_name, write_store


def test_atomic_path_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("finished result")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "finished result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_replaces_directory(tmp_path):
    target = tmp_path / "store.zarr"
    for content in ("one", "two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text(content)
    assert (target / "x").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_stale_tmp_of_killed_writer_is_removed(tmp_path):
    stale = tmp_path / ".tmp-deadbeef-out.txt"
    stale.write_text("from a killed job")
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("ok")
    assert not stale.exists()


def test_extract_keeps_dtypes_and_values(tmp_path, model_folder):
    folder, tensors = model_folder
    extract_model(str(folder), str(tmp_path / "m.zarr"), "m", {"id": "x/m", "revision": "0" * 40})
    st = ModelStore(tmp_path / "m.zarr")
    assert st.key == "m" and st.attrs["config"] == {"model_type": "tiny"}
    assert st.names() == sorted(tensors)
    for name, t in tensors.items():
        back = st.read(name)
        assert back.dtype == t.dtype
        assert torch.equal(back, t)
    assert st.dtype("conv.weight") == "bfloat16"
    assert st.group["conv.weight"].dtype.name == "uint16"
    # row blocks read alone
    assert torch.equal(st.read("fc1.weight", slice(1, 3)), tensors["fc1.weight"][1:3])


def test_large_tensor_is_sharded_in_row_blocks(tmp_path):
    from weightspace import store as store_mod

    t = torch.randn(600, 1000)  # 2.4 MB, above a lowered chunk size
    old = store_mod.CHUNK_BYTES
    store_mod.CHUNK_BYTES = 1 << 20
    try:
        write_store(tmp_path / "s.zarr", [("w", t)], {"model": "s"})
    finally:
        store_mod.CHUNK_BYTES = old
    arr = ModelStore(tmp_path / "s.zarr").group["w"]
    assert arr.chunks[0] < 600 and arr.shards is not None
    assert torch.equal(ModelStore(tmp_path / "s.zarr").read("w"), t)
    assert len(list((tmp_path / "s.zarr" / "w").glob("c.*"))) == 1  # one shard file


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_tensor_extracted_in_row_blocks(tmp_path, monkeypatch, dtype):
    """A tensor above the block size is read from the safetensors file and written one
    shard-sized row block at a time (never whole), and reads back bit-identical."""
    from weightspace import extract, store as store_mod

    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 64 << 10)
    big = torch.randn(1000, 300).to(dtype)          # 600 KB/1.2 MB: > block of 256 KB
    small = torch.randn(7, 5).to(dtype)
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"big.weight": big, "small.weight": small, "scale": torch.tensor(2.0)},
              str(folder / "model.safetensors"))
    reads = []
    real = layers.iter_slices

    class Spy:
        def __init__(self, sl):
            self.sl = sl
            self.get_shape, self.get_dtype = sl.get_shape, sl.get_dtype

        def __getitem__(self, idx):
            out = self.sl[idx]
            reads.append(out.numel() * out.element_size())
            return out

    monkeypatch.setattr(layers, "iter_slices", lambda f, m: ((n, Spy(s)) for n, s in real(f, m)))
    extract.extract_model(str(folder), str(tmp_path / "m.zarr"), "m", {"id": "m"},
                          block_bytes=256 << 10)
    st = ModelStore(tmp_path / "m.zarr")
    assert torch.equal(st.read("big.weight"), big) and torch.equal(st.read("small.weight"), small)
    assert st.read("scale").item() == 2.0 and st.dtype("big.weight") == str(dtype).removeprefix("torch.")
    big_bytes = big.numel() * big.element_size()
    assert max(reads) <= 256 << 10 < big_bytes      # the big tensor was never read whole
    assert sum(reads) == big_bytes + small.numel() * small.element_size() + 4
    n_shards = len(list((tmp_path / "m.zarr" / "big.weight").glob("c.*")))
    assert n_shards == -(-1000 // st.group["big.weight"].shards[0]) > 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_extract_copies_file_bytes_into_zarr_layout(tmp_path, monkeypatch, dtype):
    """Extraction copies each tensor's bytes from the safetensors file into the chunk and shard
    files without making a tensor of them, and every file of the store (chunks, shards,
    metadata: also the zarr.json copied for a repeated shape) is byte for byte what Zarr itself
    writes for the same data (shards with several inner chunks, a partial last shard whose
    trailing chunks are empty, a single-chunk tensor, a 1-D and a 4-D tensor)."""
    import zarr

    from weightspace import store as store_mod

    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8 << 10)
    g = torch.Generator().manual_seed(0)
    tensors = {"big.weight": torch.randn(1100, 40, generator=g).to(dtype),     # shards of 4 chunks
               "conv.weight": torch.randn(300, 3, 3, 3, generator=g).to(dtype),  # 4-D, sharded
               "small.weight": torch.randn(7, 5, generator=g).to(dtype),       # one chunk
               "bias": torch.randn(13, generator=g).to(dtype),
               "big2.weight": torch.randn(1100, 40, generator=g).to(dtype),  # shapes repeated
               "bias2": torch.randn(13, generator=g).to(dtype)}
    folder = tmp_path / "m"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    monkeypatch.setattr(layers.RowReader, "__getitem__", lambda *a: pytest.fail("bytes read into Python"))
    made = []
    create = zarr.Group.create_array
    monkeypatch.setattr(zarr.Group, "create_array", lambda self, name, **kw: made.append(name) or create(self, name, **kw))
    write_store(tmp_path / "x.zarr", layers.iter_slices(folder), {"model": "x"}, block_bytes=32 << 10)
    assert sorted(made) == ["bias", "big.weight", "conv.weight", "small.weight"]  # repeats: metadata copied
    monkeypatch.undo()
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8 << 10)
    write_store(tmp_path / "z.zarr", tensors.items(), {"model": "x"}, block_bytes=32 << 10)  # Zarr writes
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    ours, zarrs = files(tmp_path / "x.zarr"), files(tmp_path / "z.zarr")
    assert {str(k) for k in ours if k.name == "zarr.json"} == {"zarr.json"} | {f"{n}/zarr.json" for n in tensors}
    st = ModelStore(tmp_path / "x.zarr")
    arr = st.group["big.weight"]
    assert arr.shards[0] == 4 * arr.chunks[0] and -(-1100 // arr.chunks[0]) % 4 != 0  # last shard partial
    n_big = sum(1 for k in ours if k.parts[0] == "big.weight" and k.name.startswith("c."))
    assert n_big == -(-1100 // arr.shards[0]) > 2 and st.group["conv.weight"].shards is not None
    assert ours.keys() == zarrs.keys() and all(ours[k] == zarrs[k] for k in ours)
    for name, t in tensors.items():
        assert st.dtype(name) == str(dtype).removeprefix("torch.")
        assert torch.equal(st.read(name), t)
    assert torch.equal(st.read("big.weight", slice(990, 1100)), tensors["big.weight"][990:])


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ""])
def test_unsafe_tensor_names_refused(name):
    with pytest.raises(ValueError, match="not a safe name"):
        check_tensor_name(name, "bad-model")


def test_pickle_only_folder_refused_never_loaded(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    with pytest.raises(layers.ModelFormatError, match="model org--p: only pickle checkpoints"):
        layers.weight_files(folder, "org--p")


def test_corrupt_safetensors_names_model(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(layers.ModelFormatError, match="model c: cannot read model.safetensors"):
        list(layers.iter_tensors(folder, "c"))


def test_sharded_checkpoint_read_through_index(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2, 2)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b.weight": torch.zeros(3, 2)}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    assert dict((k, v.shape) for k, v in layers.iter_tensors(folder)) == {
        "a.weight": (2, 2), "b.weight": (3, 2)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "../evil.safetensors"}}))
    with pytest.raises(layers.ModelFormatError, match="unsafe file"):
        layers.weight_files(folder)


def test_views_and_lora_scale(tmp_path):
    g = torch.Generator().manual_seed(0)
    p = "base_model.model."
    tensors = {f"{p}fc1.lora_A.weight": torch.randn(2, 5, generator=g),
               f"{p}fc1.lora_B.weight": torch.randn(4, 2, generator=g)}
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 8}
    write_store(tmp_path / "a.zarr", tensors.items(), {"model": "a", "adapter_config": cfg})
    st = ModelStore(tmp_path / "a.zarr")
    assert [t.name for t in layers.targets(st, "factors")] == sorted(tensors)
    (delta,) = layers.targets(st, "delta")
    assert delta.name == f"{p}fc1" and delta.shape == (4, 5)
    L = layers.read_target(st, delta)
    torch.testing.assert_close(L.dense(), 4.0 * tensors[f"{p}fc1.lora_B.weight"].double()
                               @ tensors[f"{p}fc1.lora_A.weight"].double())
    assert layers.lora_scale({"r": 16, "lora_alpha": 16, "use_rslora": True}, "x") == 4.0
    assert layers.lora_scale({"r": 8, "lora_alpha": 16, "alpha_pattern": {"fc1": 32}}, f"{p}fc1") == 4.0


def test_conv_kernel_matrix_view(tmp_path, model_folder):
    folder, tensors = model_folder
    extract_model(str(folder), str(tmp_path / "m.zarr"), "m", {})
    st = ModelStore(tmp_path / "m.zarr")
    full = {t.name: t.shape for t in layers.targets(st, "full")}
    assert full == {"conv.weight": (4, 18), "fc1.weight": (5, 3)}
    assert layers.kept_tensors(st, "full") == ["fc1.bias"]


def test_read_into_buffer_is_in_place_and_equal(tmp_path):
    """A row block read into a given float32 buffer fills it without a new array; a buffer of
    another dtype (bf16 store) is ignored and the block read as usual."""
    t = torch.randn(50, 7)
    write_store(tmp_path / "s.zarr", [("w", t), ("b", t.bfloat16())], {"model": "s"})
    st = ModelStore(tmp_path / "s.zarr")
    buf = torch.zeros(100)
    got = st.read("w", slice(10, 20), out=buf[:70])
    assert got.data_ptr() == buf.data_ptr() and torch.equal(got, t[10:20]) and torch.all(buf[70:] == 0)
    other = st.read("b", slice(10, 20), out=buf[:70])
    assert other.data_ptr() != buf.data_ptr() and torch.equal(other, t[10:20].bfloat16())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64])
def test_whole_reads_come_from_files_and_equal_zarr(tmp_path, monkeypatch, dtype):
    """``read`` without a buffer (every stage's tensor reads) takes the same file path as the
    row blocks, for every stored dtype (bf16 back as bf16), whole tensors and row slices; a
    listing of the names is made once per store (each costs a metadata read per array)."""
    import zarr

    from weightspace import store as store_mod

    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8 << 10)
    g = torch.Generator().manual_seed(2)
    tensors = {"big.weight": (torch.randn(700, 40, generator=g) * 50).to(dtype),
               "vec": (torch.randn(9, generator=g) * 50).to(dtype)}
    write_store(tmp_path / "s.zarr", tensors.items(), {"model": "s"})
    st = ModelStore(tmp_path / "s.zarr")
    zarr_reads = {name: np.asarray(st.array(name)[...]) for name in tensors}
    monkeypatch.setattr(zarr.Array, "get_basic_selection", lambda *a, **k: pytest.fail("read through Zarr"))
    for name, t in tensors.items():
        for rows in (None, slice(3, 8), slice(0, len(t))):
            got = st.read(name, rows)
            want = t if rows is None else t[rows]
            assert got.dtype == dtype and torch.equal(got, want), (name, rows)
        assert np.array_equal(zarr_reads[name], store_mod._numpy(t))
    calls = []
    monkeypatch.setattr(zarr.Group, "array_keys", lambda self: calls.append(1) or iter(["big.weight", "vec"]))
    st = ModelStore(tmp_path / "s.zarr")
    assert st.names() == st.names() == ["big.weight", "vec"] and len(calls) == 1


@pytest.mark.parametrize("writer", ["copy", "zarr"])
def test_row_blocks_read_from_files_equal_zarr(tmp_path, monkeypatch, writer):
    """Row blocks read straight from the chunk and shard files (the model-Gram pass) are what
    Zarr reads, for stores written by the file copy and by Zarr itself: blocks inside one
    chunk, across chunks, across shards, the partial last shard, a single-chunk tensor; and
    Zarr is not called for them."""
    import zarr

    from weightspace import store as store_mod

    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8 << 10)
    g = torch.Generator().manual_seed(1)
    tensors = {"big.weight": torch.randn(1100, 40, generator=g), "small.weight": torch.randn(7, 5, generator=g)}
    folder = tmp_path / "m"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    items = layers.iter_slices(folder) if writer == "copy" else tensors.items()
    write_store(tmp_path / "s.zarr", items, {"model": "s"}, block_bytes=32 << 10)
    st = ModelStore(tmp_path / "s.zarr")
    arr = st.array("big.weight")
    assert arr.shards[0] < 1100 and arr.chunks[0] < arr.shards[0]
    blocks = [("big.weight", slice(a, b)) for a, b in [(0, 3), (40, 90), (arr.chunks[0] - 5, arr.chunks[0] + 5),
                                                       (arr.shards[0] - 7, 2 * arr.shards[0] + 3), (990, 1100), (0, 1100)]]
    blocks += [("small.weight", slice(2, 6)), ("small.weight", slice(0, 7))]
    monkeypatch.setattr(zarr.Array, "get_basic_selection", lambda *a, **k: pytest.fail("read through Zarr"))
    for name, rows in blocks:
        want = tensors[name][rows]
        buf = torch.full((want.numel() + 3,), float("nan"))
        got = st.read(name, rows, out=buf[:want.numel()])
        assert got.data_ptr() == buf.data_ptr() and torch.equal(got, want), (name, rows)
        assert torch.isnan(buf[want.numel():]).all()


def test_row_blocks_fall_back_to_zarr_where_files_do_not_cover(tmp_path, monkeypatch):
    """An all-zero chunk that Zarr did not write is read as zeros (by Zarr); a shard whose index
    fails its checksum is never read from the file (Zarr's own read then refuses it)."""
    from weightspace import store as store_mod

    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8 << 10)
    t = torch.randn(200, 40)
    t[:50] = 0  # the first inner chunk (50 rows of 40 float32) is all zeros: not written
    write_store(tmp_path / "s.zarr", [("w", t)], {"model": "s"})
    st = ModelStore(tmp_path / "s.zarr")
    assert st.array("w").chunks[0] == 50
    buf = torch.full((60 * 40,), float("nan"))
    assert torch.equal(st.read("w", slice(40, 100), out=buf), t[40:100])
    shard = tmp_path / "s.zarr" / "w" / "c.0.0"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # the index checksum
    shard.write_bytes(bytes(raw))
    st = ModelStore(tmp_path / "s.zarr")
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        st.read("w", slice(100, 120), out=buf[:800])


@pytest.mark.parametrize("shape", [(768, 768), (3072, 768), (768, 3072), (1000, 7), (65536, 4096), (5, 300000)])
def test_chunks_split_rows_evenly(shape):
    """Chunks of about CHUNK_BYTES with the rows split evenly: the zero padding of the last
    chunk (written to disk) is less than one row per chunk, and shards hold whole chunks."""
    from weightspace.store import CHUNK_BYTES, _layout

    row_bytes = 4 * shape[1]
    chunks, shards = _layout(shape, 4)
    rows, n_chunks = chunks[0], -(-shape[0] // chunks[0])
    assert n_chunks == min(shape[0], -(-shape[0] * row_bytes // CHUNK_BYTES)) or shards is None
    assert n_chunks * rows - shape[0] < n_chunks
    assert rows * row_bytes <= CHUNK_BYTES + row_bytes or rows == 1
    if shards is not None:
        assert shards[0] % rows == 0
    assert _layout((768, 768), 4)[0] == (256, 768)


def test_row_blocks_of_stores_in_the_earlier_layout(tmp_path, monkeypatch):
    """Stores extracted before chunk keys became ``c.0.0`` (Zarr's default ``c/0/0``, rows not
    split evenly) are read straight from their files too, and equal Zarr's reads."""
    import zarr

    t = torch.randn(1100, 40)
    g = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=3)
    g.create_array("w", shape=t.shape, dtype="float32", chunks=(51, 40), shards=(204, 40),
                   compressors=None, fill_value=0)[...] = t.numpy()
    g.create_array("v", shape=(7, 5), dtype="float32", chunks=(7, 5), compressors=None, fill_value=0)[...] = t[:7, :5].numpy()
    assert (tmp_path / "old.zarr" / "w" / "c" / "0" / "0").is_file()
    st = ModelStore(tmp_path / "old.zarr")
    monkeypatch.setattr(zarr.Array, "get_basic_selection", lambda *a, **k: pytest.fail("read through Zarr"))
    for rows in (slice(0, 3), slice(40, 260), slice(1000, 1100)):
        buf = torch.empty(t[rows].numel())
        assert torch.equal(st.read("w", rows, out=buf), t[rows])
    assert torch.equal(st.read("v", slice(2, 6), out=torch.empty(20)), t[2:6, :5])


WRITER = """
import os, sys, torch
from weightspace.io import atomic_path, write_safetensors
os.umask(int(sys.argv[2], 8))
meta = {"view": "full", "k": "4", "models": '["m0", "m1"]', "shapes": "{}", "é": "ü"}
with atomic_path(sys.argv[1]) as tmp:
    write_safetensors({"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4)}, tmp, metadata=meta)
"""


def test_safetensors_outputs_are_byte_reproducible_and_follow_the_umask(tmp_path):
    """safetensors writes its metadata map in a random order per process and its files 0600:
    written through io, three processes give identical bytes that safetensors reads back, with
    the mode the umask gives a new file (0644 under 022, 0600 under 077)."""
    import subprocess
    import sys

    from safetensors import safe_open

    files = []
    for i, mask in enumerate(["022", "022", "077"]):
        files.append(tmp_path / f"f{i}.safetensors")
        subprocess.run([sys.executable, "-c", WRITER, str(files[-1]), mask], check=True)
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    assert [f.stat().st_mode & 0o777 for f in files] == [0o644, 0o644, 0o600]
    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata()["models"] == '["m0", "m1"]' and f.metadata()["é"] == "ü"
        assert torch.equal(f.get_tensor("b"), torch.arange(6.0).reshape(2, 3))


def test_a_zero_d_tensor_keeps_its_shape(tmp_path):
    """BatchNorm's num_batches_tracked is 0-D: stored and read back as 0-D (not shape (1,))."""
    write_store(tmp_path / "s.zarr", {"n": torch.tensor(7), "h": torch.tensor(1.5, dtype=torch.bfloat16),
                                      "w": torch.ones(2, 3)}.items(), {"model": "m"})
    st = ModelStore(tmp_path / "s.zarr")
    assert st.read("n").shape == () and int(st.read("n")) == 7
    assert st.read("h").shape == () and st.read("h").dtype == torch.bfloat16 and float(st.read("h")) == 1.5
