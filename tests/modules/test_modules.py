"""Property tests of the shipped modules: each fails when its formula is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geot.errors import ConfigError
from geot.modules import (
    MODULES,
    FrozenPart,
    LabelledPart,
    Schedule,
    StepContext,
    UnlabelledPart,
    build_module,
    build_modules,
)
from geot.modules.explainers.normgrad import NormGradSaliency
from geot.modules.losses.elr import EarlyLearningReg
from geot.modules.losses.legogcd import DebiasedLocalEntropy, kl_between
from geot.modules.metric import tooth_metric
from geot.modules.rules.loki import frechet_mean
from geot.modules.selectors.agcd import AdaptiveMarginSelector
from geot.modules.targets.pskd import ProgressiveSoftTargets
from tests.conftest import tiny_model
from tests.modules.steps import make_ctx


def context(p: int = 64, seed: int = 0, epoch: int = 0) -> StepContext:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(p, 17, generator=g, requires_grad=True)
    index = torch.stack([torch.zeros(p, dtype=torch.long), torch.arange(p)], 1)
    return make_ctx(epoch, 0, 10, logits_lab=torch.randn(8, 17), labels=torch.zeros(8, dtype=torch.long),
                    logits=logits, probs_teacher=torch.softmax(torch.randn(p, 17, generator=g) * 3, 1),
                    point_index=index, pos=torch.rand(p, 3, generator=g), batch=torch.zeros(p, dtype=torch.long))


def test_tooth_metric_is_a_metric():
    d = tooth_metric()
    assert (d == d.T).all() and (np.diag(d) == 0).all()
    assert (d[:, :, None] <= d[:, None, :] + d[None, :, :].transpose(0, 2, 1) + 1e-9).all()  # triangle
    assert d[1, 2] == d[1, 9] == 1  # 11-12 neighbours, 11-21 across the midline
    assert tooth_metric(mirror=np.inf)[8, 16] == 15  # 18 -> ... -> 11 -> 21 -> ... -> 28
    assert d[0, 5] == 8


def test_loki_picks_the_middle_and_equals_argmax_under_01():
    path = torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]])
    p = torch.tensor([[0.4, 0.2, 0.4]])
    assert frechet_mean(p, path).item() == 1 and p.argmax().item() == 0
    zero_one = 1 - torch.eye(17)
    probs = torch.softmax(torch.randn(200, 17), 1)
    assert torch.equal(frechet_mean(probs, zero_one), probs.argmax(1))
    perm = torch.randperm(17)
    d = torch.as_tensor(tooth_metric(), dtype=torch.float32)
    assert torch.equal(perm[frechet_mean(probs[:, perm], d[perm][:, perm])], frechet_mean(probs, d))


def test_elr_target_is_ema_and_step_raises_agreement():
    torch.manual_seed(0)
    elr = EarlyLearningReg(beta=0.7)
    ctx = context()
    seen = []
    for _ in range(3):
        elr(ctx)
        p = torch.softmax(ctx.unl.logits.detach(), 1).clamp(1e-4, 1 - 1e-4)
        seen.append(p / p.sum(1, keepdim=True))
    expected = 0.7 * (0.7 * seen[0] + 0.3 * seen[1]) + 0.3 * seen[2]
    torch.testing.assert_close(elr.memory.get(ctx.unl.point_index)[0], expected)
    loss, logs = elr(ctx)
    loss.backward()
    with torch.no_grad():
        stepped = ctx.unl.logits - 0.5 * ctx.unl.logits.grad
    target = elr.memory.get(ctx.unl.point_index)[0]
    before = (target * torch.softmax(ctx.unl.logits.detach(), 1)).sum(1).mean()
    after = (target * torch.softmax(stepped, 1)).sum(1).mean()
    assert after > before


def test_pskd_targets():
    t = ProgressiveSoftTargets(alpha_t=0.8)
    ctx = context(epoch=0)
    hard = torch.nn.functional.one_hot(ctx.unl.probs_teacher.argmax(1), 17).float()
    first = t(ctx, hard)  # nothing remembered yet: the label itself
    torch.testing.assert_close(first, hard)
    ctx2 = context(epoch=9)
    second = t(ctx2, hard)
    a = t.alpha(9, 10)
    assert a == pytest.approx(0.8)
    torch.testing.assert_close(second, (1 - a) * hard + a * torch.softmax(ctx.unl.logits.detach(), 1))
    torch.testing.assert_close(second.sum(1), torch.ones(64))
    assert t.alpha(0, 10) == pytest.approx(0.08)


@pytest.mark.parametrize("temperature, confidence_temperature", [(None, None), (0.05, 0.1)])
def test_lego_entropy_and_dual_kl(temperature, confidence_temperature):
    """Defaults (temperature 1 for geot's linear head) and the published temperatures, passed as args."""
    args = {} if temperature is None else {"temperature": temperature, "confidence_temperature": confidence_temperature}
    t, conf_t = temperature or 1.0, confidence_temperature or 1.0
    ler = DebiasedLocalEntropy(threshold=0.0, momentum=1.0, **args)  # uniform marginal stays uniform
    ctx = context()
    loss, logs = ler(ctx)
    q = torch.softmax(ctx.unl.logits.detach() / t, 1)
    expected = -(q * torch.log_softmax(ctx.unl.logits.detach() / t, 1)).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected)  # uniform prior: plain self-entropy
    assert logs["mask"] == 1.0
    confidence = torch.softmax(ctx.unl.logits.detach() / conf_t, 1).max(1).values
    strict = DebiasedLocalEntropy(threshold=confidence.median().item(), **args)  # about half the points pass
    mask = confidence >= confidence.median()
    assert strict(ctx)[1]["mask"] == pytest.approx(mask.float().mean().item())
    z = torch.randn(30, 17)
    assert kl_between(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_between(z, z + torch.randn(30, 17)) > 0
    dual = build_module({"name": "dual_view_kl", "args": {} if temperature is None else {"temperature": 0.1}})
    weak = z + torch.randn(30, 17)
    kl, _ = dual(make_ctx(0, 0, 1, logits=z, logits_weak=weak))
    torch.testing.assert_close(kl, kl_between(weak, z, 1.0 if temperature is None else 0.1))


def test_normgrad_identity_and_zero_activation():
    torch.manual_seed(0)
    model = tiny_model("dgcnn", channels=[8], global_channels=8, k=4)
    x, pos = torch.randn(40, 7), torch.rand(40, 3)
    maps = NormGradSaliency()(model, x, pos, torch.zeros(40, dtype=torch.long))["saliency"]
    assert maps.shape == (40,) and (maps >= 0).all() and maps.sum() > 0
    feats = model(x, pos, torch.zeros(40, dtype=torch.long)).feats
    f = feats.detach().requires_grad_(True)
    logits = model.head(f)
    torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
    g = f.grad
    # per point ||g a^T||_F == ||g|| ||a||
    outer = torch.einsum("pi,pj->pij", g, f.detach()).flatten(1).norm(dim=1)
    torch.testing.assert_close(maps, outer, rtol=1e-4, atol=1e-6)


def test_margin_selector_switches_with_rounds():
    sure = torch.nn.functional.one_hot(torch.full((50,), 3), 17).float() * 0.9 + 0.1 / 17
    unsure = torch.softmax(torch.zeros(50, 17), 1)
    early = AdaptiveMarginSelector(round=0)([sure, unsure])
    late = AdaptiveMarginSelector(round=3)([sure, unsure])
    assert early.argmax() == 0 and late.argmax() == 1


def test_schedule():
    s = Schedule(start=2, ramp=4, stop=10)
    assert [s(e) for e in (0, 2, 3, 5, 9, 10)] == [0, 0.25, 0.5, 1.0, 1.0, 0]


def test_unlabelled_terms_follow_the_ramp_up_unless_told_not_to():
    """A term on pseudo labels grows with the unsupervised ramp; one on labelled scans does not."""
    def total(specs: list[dict], ramp: float) -> float:
        torch.manual_seed(0)  # modules with random initial state build alike
        ctx = context()
        ctx.ramp = ramp
        loss, _ = build_modules(specs).loss(ctx)
        return loss.item()

    elr = [{"name": "elr"}]
    assert total(elr, 0.25) == pytest.approx(0.25 * total(elr, 1.0))
    fixed = [{"name": "elr", "schedule": {"follow_ramp": False}}]
    assert total(fixed, 0.25) == pytest.approx(total(fixed, 1.0))
    labelled = [{"name": "head_diversity"}]  # a term on the classifier, not on pseudo labels
    assert total(labelled, 0.0) == pytest.approx(total(labelled, 1.0)) != 0.0


def test_unknown_module_and_keys():
    with pytest.raises(ConfigError, match="unknown module"):
        build_module({"name": "magic"})
    with pytest.raises(ConfigError, match="unknown keys"):
        build_module({"name": "elr", "wieght": 2})
    with pytest.raises(ConfigError, match="elr"):
        build_module({"name": "elr", "args": {"gamma": 1}})


FEAT = 16


def full_context(p: int = 64, seed: int = 0, epoch: int = 0) -> tuple[StepContext, list[torch.Tensor]]:
    """A step with everything the trainer can offer: two scans, features, a head, teacher and frozen-student
    outputs, the student's weak view.

    Also returns the tensors a module's gradient may reach (logits, features, head parameters).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(FEAT, FEAT), torch.nn.GELU(), torch.nn.Linear(FEAT, 17))
    with torch.no_grad():
        head[-1].weight.mul_(20)  # logits several units apart, as a trained head's (a fresh one's are ~0.3)
    feats = torch.randn(p, FEAT, generator=g, requires_grad=True)
    feats_lab = torch.randn(24, FEAT, generator=g, requires_grad=True)
    logits, logits_lab = head(feats), head(feats_lab)
    logits.retain_grad()
    index = torch.stack([torch.arange(p) // (p // 2), torch.arange(p)], 1)
    lab = LabelledPart(logits_lab, torch.arange(24) % 6 * 3 % 17, feats_lab)
    probs_teacher, pos = torch.softmax(torch.randn(p, 17, generator=g) * 5, 1), torch.rand(p, 3, generator=g)
    unl = UnlabelledPart(logits, feats, probs_teacher, feats.detach() + 0.1 * torch.randn(p, FEAT, generator=g),
                         index, pos, batch=index[:, 0].clone())
    frozen = FrozenPart(logits.detach() + torch.randn(p, 17, generator=g),
                        feats.detach() + 0.3 * torch.randn(p, FEAT, generator=g),
                        feats_lab.detach() + 0.3 * torch.randn(24, FEAT, generator=g))
    unl.logits_weak = logits.detach() + torch.randn(p, 17, generator=g)
    return StepContext(epoch, 0, 10, head, lab, unl, frozen), [logits, feats, feats_lab, *head.parameters()]


def test_registry_selftest():
    """Every loss and target module on a tiny batch: finite, gradients reach the model or the module's own
    parameters, a second step after an epoch end works, state round-trips."""
    for name, cls in MODULES.items():
        if cls.kind not in ("loss", "target"):
            continue
        module = build_module({"name": name}, feat_dim=FEAT)
        for step in range(2):
            ctx, reachable = full_context(seed=step)
            if cls.kind == "loss":
                loss, logs = module(ctx)
                assert torch.isfinite(loss) and all(np.isfinite(v) for v in logs.values()), name
                loss.backward()
                grads = [t.grad for t in [*reachable, *module.parameters()] if t.grad is not None]
                assert any(g.abs().sum() > 0 for g in grads), name
            else:
                out = module(ctx, torch.nn.functional.one_hot(ctx.unl.probs_teacher.argmax(1), 17).float())
                torch.testing.assert_close(out.sum(1), torch.ones(64), msg=name)
                assert ctx.target_weight is None or ctx.target_weight.shape == (64,), name
            module.on_epoch_end(step)
        copy = build_modules([{"name": name}], feat_dim=FEAT)
        copy.load_state_dict(build_modules([{"name": name}], feat_dim=FEAT).state_dict())
        state = {"all.0." + k: v for k, v in module.state_dict().items()}
        copy.load_state_dict(state)
        for k, v in module.state_dict().items():
            assert torch.equal(copy.all[0].state_dict()[k], v), (name, k)


def test_registry_selftest_rules_explainers_selectors():
    """Every prediction rule, explainer and selector as the CLI builds it (no arguments)."""
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(300, 17) * 3, 1)
    model = tiny_model("dgcnn", channels=[8], global_channels=8, k=4)
    x, pos, batch = torch.randn(60, 7), torch.rand(60, 3), torch.zeros(60, dtype=torch.long)
    kinds = set()
    for name, cls in MODULES.items():
        module = build_module({"name": name})
        kinds.add(cls.kind)
        if cls.kind == "rule":
            out = module(probs)
            assert out.shape == (300,) and out.dtype == torch.long and 0 <= out.min() and out.max() < 17, name
        elif cls.kind == "explainer":
            maps = module(model, x, pos, batch)
            assert maps and all(m.shape == (60,) and torch.isfinite(m).all() for m in maps.values()), name
        elif cls.kind == "selector":
            scores = module([probs, probs[:100]])
            assert scores.shape == (2,) and torch.isfinite(scores).all(), name
    assert {"rule", "explainer", "selector"} <= kinds


def test_objectives_average_with_target_weights():
    """Per-point weights set by filtering target transforms: weight 0 drops a point from every objective, and
    any weights give the weighted mean of the points' own losses."""
    from geot.method.fixmatch import FixMatch
    from geot.method.geot import GeoT, GeoTSettings
    from geot.method.mean_teacher import MeanTeacher

    torch.manual_seed(3)
    logits = torch.randn(40, 17)
    probs = torch.softmax(torch.randn(40, 17) * 4, 1)
    pos, batch = torch.rand(40, 3), torch.zeros(40, dtype=torch.long)
    keep = torch.arange(40) < 25
    soft = torch.rand(40) + 0.5
    for objective in (MeanTeacher(), FixMatch(0.0), GeoT(GeoTSettings(idtm=False))):
        targets = objective.targets(probs)
        weighted, _ = objective(logits, probs, targets, pos, batch, weight=keep.float())
        subset, _ = objective(logits[keep], probs[keep], targets[keep], pos[keep], batch[keep])
        torch.testing.assert_close(weighted, subset)
        each = torch.stack([objective(logits[i:i + 1], probs[i:i + 1], targets[i:i + 1], pos[i:i + 1],
                                      batch[i:i + 1])[0] for i in range(40)])
        torch.testing.assert_close(objective(logits, probs, targets, pos, batch)[0], each.mean())
        torch.testing.assert_close(objective(logits, probs, targets, pos, batch, weight=soft)[0],
                                   (soft * each).sum() / soft.sum())
