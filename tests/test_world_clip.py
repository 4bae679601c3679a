import pytest
import torch

from evalkit.contracts import TextEncoder, text_encoder_parameters
from evalkit.world.models.clip import EMBEDDING_SPACE, WorldCLIP
from evalkit.world.models.tokenizer import CompactTokenizer


def test_encoders_expose_what_priors_need():
    torch.manual_seed(0)
    clip = WorldCLIP.tiny().eval()
    enc = clip.encode_text(["a red circle and a blue square", "a big star and a small cross"])
    assert enc.encoder == EMBEDDING_SPACE
    assert enc.text_embeds.shape == (2, clip.embedding_dim)
    assert enc.text_hidden.shape == (2, clip.tokenizer.context_length, clip.text_width)
    assert enc.attention_mask.dtype == torch.bool and enc.attention_mask[0].sum() == 9  # sot + 7 words + eot
    images = torch.rand(3, 3, 32, 32)
    raw = clip.encode_image(images)
    assert raw.shape == (3, clip.embedding_dim) and not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    # the TextEncoder contract the run reads: a closed vocabulary, the text tower's size
    assert isinstance(clip, TextEncoder) and clip.unknown_words("a red zebra") == ["zebra"]
    assert 0 < text_encoder_parameters(clip) < sum(p.numel() for p in clip.parameters())


def test_out_of_vocabulary_words_warn_but_encode():
    tokenizer = CompactTokenizer.from_words(["a", "red", "circle", "and"], context_length=12)
    with pytest.warns(UserWarning, match="'zebra' is outside"):
        ids, mask = tokenizer(["a red zebra"])
    assert (ids[0] == tokenizer.UNK).any() and mask[0].sum() >= 4
    assert ids[0].argmax() == mask[0].sum() - 1  # end-of-text has the highest id: open_clip's argmax pooling


def test_tokenizer_matches_open_clip_bpe_pieces():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = CompactTokenizer.from_words(["a", "checkered", "circle"], context_length=10)
    bpe = SimpleTokenizer().encode("a checkered circle")
    ids, _ = tokenizer(["a checkered circle"])
    assert [tokenizer.bpe_ids[i - 2] for i in ids[0, 1 : 1 + len(bpe)].tolist()] == bpe


def test_retrieval_metrics_nest():
    """Own caption ⊂ a true caption ⊂ the words of a true caption: each retrieval rate bounds the previous one."""
    from evalkit.checks.clip_eval import evaluate_clip

    torch.manual_seed(0)
    metrics = evaluate_clip(WorldCLIP.tiny().eval(), seeds=1, categories=("color",))
    for split in ("seen", "unseen"):
        own, true, words = (metrics[f"color/{split}/{m}"] for m in ("i2t_top1", "i2t_top1_true", "i2t_top1_words"))
        assert 0 <= own <= true <= words <= 1
    assert metrics["mean/seen/i2t_top1_words"] == metrics["color/seen/i2t_top1_words"]
