"""The model bank: its linear map against each model's dense matrix, its file, serving mixed
batches through a skeleton, adding a model, and the errors it gives."""

import json

import pytest
import torch

from weightspace.bank import (Bank, BankEmbedding, BankError, BankLinear, BankLoRALinear, Matrix, PerModelModule,
                              PerRowLinear, PerRowNorm, attach, interleave, load_bank)
from weightspace.core.bank import (RowPlan, bank_dense, bank_flops, bank_linear, gather_core, lora_rank_for_bytes,
                                   plan_rows)

F64 = torch.float64


def _orth(n, k, g):
    return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))[0]


def _parts(N=7, m=12, n=9, kr=4, kc=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, n, generator=g, dtype=F64), _orth(m, kr, g), _orth(n, kc, g),
            torch.randn(N, kr, kc, generator=g, dtype=F64), torch.randn(N, m, generator=g, dtype=F64), g)


# ----------------------------------------------------------------------------- core
@pytest.mark.parametrize("shape", [(20,), (20, 5)])
@pytest.mark.parametrize("bias", ["per-model", "shared", None])
def test_bank_linear_equals_each_rows_dense_model(shape, bias):
    """y_b = x_b W_{m(b)}ᵀ + b_{m(b)} with W_i = R + U_r C_i U_cᵀ, for rows that are vectors or
    sequences, gathered, grouped by model (RowPlan) and for one model; float64 to 1e-10."""
    R, Ur, Uc, C, b, g = _parts()
    N = C.shape[0]
    x = torch.randn(*shape, R.shape[1], generator=g, dtype=F64)
    ids = torch.randint(0, N, (shape[0],), generator=g)
    b = {"per-model": b, "shared": b[0], None: None}[bias]
    W = bank_dense(R, Ur, Uc, C)
    assert torch.allclose(W[2], R + Ur @ C[2] @ Uc.T, atol=1e-14)

    def ref(i, xb):
        y = xb @ W[i].T
        return y if b is None else y + (b[i] if b.ndim == 2 else b)

    want = torch.stack([ref(int(ids[r]), x[r]) for r in range(shape[0])])
    grouped = RowPlan(ids, torch.argsort(ids, stable=True), tuple(torch.bincount(ids, minlength=N).tolist()))
    for rows in (ids, grouped, plan_rows(ids, N)):
        torch.testing.assert_close(bank_linear(x, rows, R, Ur, Uc, C, b), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(bank_linear(x, 3, R, Ur, Uc, C, b), torch.stack([ref(3, xr) for xr in x]),
                               rtol=0, atol=1e-10)


def test_row_plan_groups_only_when_models_have_many_rows():
    many = torch.arange(64) % 2            # 32 rows per model: one product per model
    few = torch.arange(64)                 # a model per row: one gather
    assert plan_rows(many, 4).order is not None and plan_rows(many, 4).counts == (32, 32, 0, 0)
    assert plan_rows(few, 64).order is None
    z = torch.randn(64, 3, dtype=F64)
    C = torch.randn(64, 2, 3, dtype=F64)
    torch.testing.assert_close(gather_core(z, C, plan_rows(many, 64)), gather_core(z, C, many), rtol=0, atol=1e-12)


def test_flop_count_and_equal_bytes_rank():
    f = bank_flops(768, 768, 16, 16)
    assert f["dense"] == 768 * 768 and f["extra"] == 16 * 768 * 2 + 256 and f["bank"] == f["dense"] + f["extra"]
    assert lora_rank_for_bytes(16, 16, 768, 768) == 1 and lora_rank_for_bytes(64, 64, 64, 64) == 32


def test_interleave_mixes_models_and_covers_every_row():
    models, rows = interleave([3, 1, 2])
    assert list(zip(models.tolist(), rows.tolist())) == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


# ----------------------------------------------------------------------------- a synthetic bank
class Net(torch.nn.Module):
    """An embedding, a Linear, a LayerNorm, a conv and a head: every kind of served module."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 6)
        self.fc = torch.nn.Linear(6, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.conv = torch.nn.Conv1d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, tokens):
        h = self.norm(self.fc(self.emb(tokens)))                     # B × T × 8
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h.mean(1))


def _matrix(weight, shape, N, k, g, role="weight", module=""):
    m, n = shape[0], int(torch.tensor(shape[1:]).prod())
    return Matrix(weight, tuple(shape), role, torch.randn(m, n, generator=g, dtype=F64), _orth(m, min(k, m), g),
                  _orth(n, min(k, n), g), torch.randn(N, min(k, m), min(k, n), generator=g, dtype=F64), module)


def synthetic_bank(N=5, k=3, seed=0) -> Bank:
    g = torch.Generator().manual_seed(seed)
    mats = {n: _matrix(n, s, N, k, g) for n, s in
            (("emb.weight", (11, 6)), ("fc.weight", (8, 6)), ("conv.weight", (8, 8, 3)), ("head.weight", (3, 8)))}
    kept = {n: torch.randn(N, *s, generator=g, dtype=F64) for n, s in
            (("fc.bias", (8,)), ("norm.weight", (8,)), ("norm.bias", (8,)), ("conv.bias", (8,)), ("head.bias", (3,)))}
    return Bank("full", k, [f"m{i}" for i in range(N)], mats, kept, configs=[{"i": i} for i in range(N)])


def _own_forward(bank, i, tokens):
    net = Net().double()
    net.load_state_dict(bank.weights(i))
    return net(tokens)


def test_attached_skeleton_serves_every_row_as_its_own_model():
    """A mixed batch through the attached skeleton equals each row's model run alone (its
    weights from ``Bank.weights``), for every kind of module; float64 to 1e-10."""
    bank = synthetic_bank()
    served = attach(bank, Net().double())
    kinds = {type(m) for m in served.model.modules()}
    assert {BankEmbedding, BankLinear, PerRowNorm, PerModelModule} <= kinds
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 11, (12, 4), generator=g)
    ids = torch.randint(0, len(bank), (12,), generator=g)
    with torch.no_grad():
        out = served(tokens, model_ids=ids)
        want = torch.cat([_own_forward(bank, int(i), tokens[r:r + 1]) for r, i in enumerate(ids)])
        torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
        keys = [bank.models[int(i)] for i in ids]
        torch.testing.assert_close(served(tokens, model_ids=keys), out, rtol=0, atol=0)
        torch.testing.assert_close(served(tokens, model_ids="m2"), _own_forward(bank, 2, tokens), rtol=0, atol=1e-10)
        with served.select(ids):
            torch.testing.assert_close(served.model(tokens), out, rtol=0, atol=0)


def test_a_per_model_head_is_gathered_per_row():
    """A Linear whose weight is kept per model (an adapter's head) becomes a PerRowLinear: the
    gather and the per-model loop (past GATHER_LIMIT) give each row its own head."""
    import weightspace.bank as wb

    g = torch.Generator().manual_seed(0)
    N = 4
    bank = Bank("delta", 2, [f"m{i}" for i in range(N)], {},
                {"head.weight": torch.randn(N, 3, 8, generator=g, dtype=F64),
                 "head.bias": torch.randn(N, 3, generator=g, dtype=F64)})
    model = torch.nn.Sequential()
    model.add_module("head", torch.nn.Linear(8, 3).double())
    served = attach(bank, model)
    assert isinstance(served.model.head, PerRowLinear)
    x = torch.randn(10, 8, generator=g, dtype=F64)
    ids = torch.randint(0, N, (10,), generator=g)
    want = torch.stack([x[r] @ bank.kept["head.weight"][i].T + bank.kept["head.bias"][i] for r, i in enumerate(ids)])
    with torch.no_grad():
        torch.testing.assert_close(served(x, model_ids=ids), want, rtol=0, atol=1e-12)
        limit = wb.GATHER_LIMIT
        wb.GATHER_LIMIT = 0
        try:
            torch.testing.assert_close(served(x, model_ids=ids), want, rtol=0, atol=1e-12)
        finally:
            wb.GATHER_LIMIT = limit


def test_adapter_banks_add_to_the_base_delta_and_factors():
    """delta: W_base + μ + U_r C U_cᵀ; factors: W_base + s·B̂Â (two bank products in a chain)."""
    g = torch.Generator().manual_seed(3)
    N, r = 6, 2
    base = torch.nn.Linear(7, 5).double()
    for view in ("delta", "factors"):
        if view == "delta":
            mats = {"base_model.model.lin": _matrix("lin.weight", (5, 7), N, 3, g, "delta", "base_model.model.lin")}
            scales = {}
        else:
            mats = {"A": _matrix("lin.weight", (5, 7), N, 2, g, "lora_A", "base_model.model.lin"),
                    "B": _matrix("lin.weight", (5, 7), N, 2, g, "lora_B", "base_model.model.lin")}
            mats["A"] = Matrix("lin.weight", (5, 7), "lora_A", torch.randn(r, 7, generator=g, dtype=F64),
                               _orth(r, 2, g), _orth(7, 2, g), torch.randn(N, 2, 2, generator=g, dtype=F64),
                               "base_model.model.lin")
            mats["B"] = Matrix("lin.weight", (5, 7), "lora_B", torch.randn(5, r, generator=g, dtype=F64),
                               _orth(5, 2, g), _orth(r, 2, g), torch.randn(N, 2, 2, generator=g, dtype=F64),
                               "base_model.model.lin")
            scales = {"base_model.model.lin": torch.rand(N, generator=g, dtype=F64) + 0.5}
        bank = Bank(view, 2, [f"m{i}" for i in range(N)], mats, {}, scales)
        model = torch.nn.Sequential()
        model.add_module("lin", torch.nn.Linear(7, 5).double())
        model.lin.load_state_dict(base.state_dict())
        served = attach(bank, model)
        assert isinstance(served.model.lin, BankLoRALinear if view == "factors" else BankLinear)
        x = torch.randn(9, 3, 7, generator=g, dtype=F64)
        ids = torch.randint(0, N, (9,), generator=g)
        with torch.no_grad():
            out = served(x, model_ids=ids)
        for row, i in enumerate(ids.tolist()):
            w = bank.weights(i, {"lin.weight": base.weight.detach(), "lin.bias": base.bias.detach()})
            torch.testing.assert_close(out[row], x[row] @ w["lin.weight"].T + w["lin.bias"], rtol=0, atol=1e-10)


def test_tied_parameters_are_served_everywhere_they_are_used():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(11, 6)
            self.out = torch.nn.Linear(6, 11, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, t):
            return self.out(self.emb(t))

    g = torch.Generator().manual_seed(0)
    bank = Bank("full", 3, ["a", "b", "c"], {"emb.weight": _matrix("emb.weight", (11, 6), 3, 3, g)})
    served = attach(bank, Tied().double())
    assert isinstance(served.model.emb, BankEmbedding) and isinstance(served.model.out, BankLinear)
    t = torch.randint(0, 11, (3, 2), generator=g)
    with torch.no_grad():
        out = served(t, model_ids=[0, 1, 2])
    for i in range(3):
        W = bank.weights(i)["emb.weight"]
        torch.testing.assert_close(out[i], W[t[i]] @ W.T, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- files, adding
def test_save_load_roundtrip_and_append_a_model(tmp_path):
    """A saved bank loads equal (safetensors + JSON); appending a model projects its matrices
    onto the basis (C = U_rᵀ (W − μ) U_c) and serves it at once, without touching the others."""
    bank = synthetic_bank()
    bank.save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bank.safetensors", "index.json"]
    again = load_bank(tmp_path / "b")
    assert again.models == bank.models and again.configs == bank.configs and set(again.kept) == set(bank.kept)
    for name, m in bank.matrices.items():
        for part in ("mean", "U_row", "U_col", "coef"):
            assert torch.equal(getattr(again.matrices[name], part), getattr(m, part))
    served = attach(again, Net().double())
    # a new model inside the span of the basis: its projection is exact
    g = torch.Generator().manual_seed(7)
    new_C = {n: torch.randn(*m.coef.shape[1:], generator=g, dtype=F64) for n, m in bank.matrices.items()}
    mats = {n: m.mean + m.U_row @ new_C[n] @ m.U_col.T for n, m in bank.matrices.items()}
    kept = {n: torch.randn(t.shape[1:], generator=g, dtype=F64) for n, t in bank.kept.items()}
    before = {n: m.coef.clone() for n, m in served.bank.matrices.items()}
    row = served.append("new", mats, kept, config={"i": 99})
    assert row == 5 and served.bank.models[-1] == "new"
    for n, m in served.bank.matrices.items():
        assert torch.equal(m.coef[:5], before[n])
        torch.testing.assert_close(m.coef[5], new_C[n], rtol=0, atol=1e-12)
    tokens = torch.randint(0, 11, (4, 3), generator=g)
    with torch.no_grad():
        out = served(tokens, model_ids=["new", "m1", "new", "m4"])
    for r, key in enumerate(["new", "m1", "new", "m4"]):
        torch.testing.assert_close(out[r:r + 1], _own_forward(served.bank, served.bank.row(key), tokens[r:r + 1]),
                                   rtol=0, atol=1e-10)
    with pytest.raises(BankError, match="already in the bank"):
        served.append("new", mats, kept)


def test_bad_inputs_are_named(tmp_path):
    bank = synthetic_bank()
    served = attach(bank, Net().double())
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(BankError, match="model index 5 is outside the bank"):
        served(tokens, model_ids=[0, 5])
    with pytest.raises(BankError, match="model 'nope' is not in the bank"):
        served(tokens, model_ids=["m0", "nope"])
    with pytest.raises(BankError, match="batch has 2 rows but 3 model ids"):
        served(tokens, model_ids=[0, 1, 2])
    with pytest.raises(BankError, match="no models selected"):
        served.model(tokens)
    # a skeleton of other shapes, or without a tensor the bank serves
    other = Net().double()
    other.fc = torch.nn.Linear(6, 9)
    with pytest.raises(BankError, match=r"fc.weight is \(9, 6\), the bank's \(8, 6\)"):
        attach(bank, other)
    with pytest.raises(BankError, match="no parameter 'emb.weight'"):
        attach(bank, torch.nn.Linear(3, 3))
    # a bank file missing a tensor, or its index
    bank.save(tmp_path / "b")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "b" / "bank.safetensors"))
    del tensors["coef/fc.weight"]
    save_file(tensors, str(tmp_path / "b" / "bank.safetensors"))
    with pytest.raises(BankError, match="lacks the tensor 'coef/fc.weight'"):
        load_bank(tmp_path / "b")
    (tmp_path / "b" / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="no index.json"):
        load_bank(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bank.safetensors").write_bytes(b"")
    (tmp_path / "c" / "index.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(BankError, match="format 99"):
        load_bank(tmp_path / "c")
