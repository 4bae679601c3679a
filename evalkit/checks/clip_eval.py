"""Quality of the world's CLIP on the val split: retrieval, binding on both sides, paired cosine.

For each category and for seen / unseen items, with ``seeds`` renders per val caption:

- ``i2t_top1``: a render retrieves its own caption among all val captions of its category;
- ``i2t_top1_true``: the caption it retrieves is *true of it* (every phrase realised by an object of
  the scene, and for ``spatial`` two such objects in the relation: ``Scene.holds``). Captions leave
  most of a scene open, so one render fits several val captions (in ``shape`` about four on
  average): ``i2t_top1`` has a ceiling well below 1, this one does not;
- ``i2t_top1_words``: the caption it retrieves has the words of a caption true of it, in any order —
  retrieval up to binding (a bag-of-words text side, like real CLIP's, can reach 1 here, not above);
- ``caption_binding``: a render is closer to its caption than to the attribute-swapped caption;
- ``image_binding``: image-side binding — an independent render of the caption (another seed) is
  closer to the render than to the swapped render (same layout, bound attributes exchanged): the
  image embedding tells which attribute sits on which object, what a decoder needs;
- ``text_image_binding``: the caption's text embedding is closer to the render than to the swapped
  render (what the ``text`` calibration prior relies on);
- ``paired_cos``: mean cosine of a caption and its render (real CLIP: about 0.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evalkit.world import CATEGORIES, render, sample_scene, split_prompts


def val_renders(category: str, seeds: int, split: str = "val"):
    """Val prompts of ``category``, with renders and swapped renders for seeds 42, 43, ..."""
    from evalkit.priors.calibration import INDEPENDENT_SEED_OFFSET

    prompts = split_prompts(category, split)
    scenes, swapped, independent, owner = [], [], [], []
    for k, prompt in enumerate(prompts):
        for seed in range(42, 42 + seeds):
            scenes.append(sample_scene(prompt.spec, seed))
            swapped.append(sample_scene(prompt.spec.swapped(), seed))
            independent.append(sample_scene(prompt.spec, seed + INDEPENDENT_SEED_OFFSET))
            owner.append(k)
    to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)
    fits = torch.tensor([[scene.holds(p.spec) for p in prompts] for scene in scenes])
    return (
        prompts,
        to_tensor(render(scenes)),
        to_tensor(render(swapped)),
        to_tensor(render(independent)),
        torch.tensor(owner),
        fits,
    )


@torch.inference_mode()
def encode_images(model, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([model.encode_image(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.inference_mode()
def evaluate_clip(model, seeds: int = 2, categories=CATEGORIES) -> dict[str, float]:
    out: dict[str, float] = {}
    for category in categories:
        prompts, images, swapped_images, independent_images, owner, fits = val_renders(category, seeds)
        text = F.normalize(model.encode_text([p.text for p in prompts]).text_embeds, dim=-1)
        text_swapped = F.normalize(model.encode_text([p.spec.swapped_text for p in prompts]).text_embeds, dim=-1)
        img = F.normalize(encode_images(model, images), dim=-1)
        img_swapped = F.normalize(encode_images(model, swapped_images), dim=-1)
        img_independent = F.normalize(encode_images(model, independent_images), dim=-1)
        sims = img @ text.T  # (images, captions)
        words = [sorted(p.text.split()) for p in prompts]
        same_words = torch.tensor([[a == b for b in words] for a in words])  # (captions, captions)
        own = sims[torch.arange(len(owner)), owner]
        metrics = {
            "i2t_top1": (sims.argmax(dim=1) == owner).float(),
            "i2t_top1_true": fits[torch.arange(len(owner)), sims.argmax(dim=1)].float(),
            "i2t_top1_words": (fits.float() @ same_words.float().T)[torch.arange(len(owner)), sims.argmax(dim=1)]
            .gt(0)
            .float(),
            "caption_binding": (own > (img * text_swapped[owner]).sum(-1)).float(),
            "image_binding": ((img_independent * img).sum(-1) > (img_independent * img_swapped).sum(-1)).float(),
            "text_image_binding": (own > (img_swapped * text[owner]).sum(-1)).float(),
            "paired_cos": own,
        }
        seen = torch.tensor([prompts[k].seen for k in owner.tolist()])
        for name, values in metrics.items():
            for label, selector in (("seen", seen), ("unseen", ~seen)):
                out[f"{category}/{label}/{name}"] = round(values[selector].mean().item(), 4)
    for name in (
        "i2t_top1",
        "i2t_top1_true",
        "i2t_top1_words",
        "caption_binding",
        "image_binding",
        "text_image_binding",
        "paired_cos",
    ):
        for label in ("seen", "unseen"):
            out[f"mean/{label}/{name}"] = round(
                sum(out[f"{c}/{label}/{name}"] for c in categories) / len(categories), 4
            )
    return out
