"""The EBT's options: each one shows its effect here (or in tests/test_ebt.py), and conflicting ones are refused.

Elsewhere: ``truncate`` and ``detach_steps`` (test_ebt.py: exact gradients), ``max_change`` / ``grad_clamp``,
``cache_context``, ``kernels``, ``eval_steps`` (test_bad_values.py), ``alpha_jitter`` (test_determinism.py),
``init=input`` (test_ebt_learns.py), the replay buffer across a resume (test_resume.py).
"""

import math
from dataclasses import fields

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from ebt.errors import ConfigError
from ebt.objectives.base import prediction_loss
from ebt.objectives.config import ADDED_OPTIONS, Backprop, EBTConfig, Randomisation, StepRule
from ebt.objectives.ebt import EBT
from ebt.training.build import build_backbone, build_lit_model, build_objective, build_task
from ebt.training.lit_module import optimizer_groups
from tests.test_ebt import SMALL, make
from tests.utils import CONFIG_DIR, compose_config


def test_every_option_is_a_flat_config_key_and_every_group_field_is_an_option():
    """The command line keeps ``model.objective.<name>`` flat: :class:`EBTConfig`'s fields, group by group, are
    exactly the shipped config's keys, and a config survives the round trip through its flat keys."""
    shipped = OmegaConf.load(CONFIG_DIR / "model" / "objective" / "ebt.yaml")
    flat = EBTConfig.flat_fields()
    assert sorted(flat) == sorted(k for k in shipped if not k.startswith("_"))
    grouped = [f.name for group in (StepRule, Randomisation, Backprop) for f in fields(group)]
    assert len(grouped) == len(set(grouped)) and set(grouped) <= set(flat)
    changed = EBTConfig.from_flat({"alpha": 3.0, "candidate_k": 5, "landscapes": 2, "contrastive_weight": 0.5,
                                   "thinking_grad": "func", "eval_steps": [1, 3]})
    assert (changed.step_rule.alpha, changed.candidate.k, changed.landscapes.count) == (3.0, 5, 2)
    assert (changed.contrastive.weight, changed.speed.thinking_grad) == (0.5, "func")
    assert changed.logged_steps == [0, 1, 2, 3]
    assert EBTConfig.from_flat(changed.flat()) == changed and EBTConfig.from_flat({}) == EBTConfig()
    with pytest.raises(ConfigError, match="model.objective.alpah is not an EBT option; valid: steps, init"):
        EBTConfig.from_flat({"alpah": 1.0})


def test_a_config_builds_the_same_model_as_its_flat_keys(tmp_path):
    """``EBT(task, backbone, dim, config)`` (the Python way) is the model the flat command-line keys build."""
    cfg = compose_config([*SMALL, "model.objective.alpha=3.0", "model.objective.time_embedding=true"], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    flat = build_objective(cfg.model, task)
    config = EBTConfig.from_flat(flat.config.flat())
    torch.manual_seed(0)
    direct = EBT(task, build_backbone(cfg.model, task), cfg.model.dim, config)
    assert direct.config == flat.config and direct.config.step_rule.alpha == 3.0
    assert list(direct.state_dict()) == list(flat.state_dict())
    for name, value in flat.state_dict().items():
        torch.testing.assert_close(direct.state_dict()[name], value, msg=name)
    with pytest.raises(ConfigError, match="a config or flat options, not both"):
        EBT(task, build_backbone(cfg.model, task), cfg.model.dim, config, alpha=2.0)


# ------------------------------------------------------------------------------------------------ the step rule
def test_alpha_lr_scale_scales_the_learning_rate_of_log_alpha_only(tmp_path):
    ebt, _ = make(tmp_path, "model.objective.alpha_lr_scale=0.25")
    groups = optimizer_groups(ebt, weight_decay=0.1, lr=1e-3)
    (alpha_group,) = [g for g in groups if any(p is ebt.log_alpha for p in g["params"])]
    assert alpha_group["lr"] == pytest.approx(0.25e-3) and alpha_group["weight_decay"] == 0
    assert all(g["lr"] == 1e-3 for g in groups if g is not alpha_group)
    with pytest.raises(ConfigError, match="alpha_lr_scale .*learn_alpha=false"):
        make(tmp_path, "model.objective.alpha_lr_scale=2", "model.objective.learn_alpha=false")


# ------------------------------------------------------------------------------------------ what the loss scores
def _loss_and_logs(ebt, batch, seed: int = 1):
    torch.manual_seed(seed)
    return ebt.loss(batch)


def test_loss_on_last_scores_only_the_final_step_and_all_the_mean_of_every_step(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.loss_on=last")
    assert ebt.config.backprop.scored == "last"
    loss, logs = _loss_and_logs(ebt, batch)
    assert [k for k in logs if k.startswith("loss_step")] == ["loss_step2"]
    torch.testing.assert_close(loss, logs["loss_step2"], atol=0, rtol=0)
    ebt.config.backprop.loss_on = "all"
    loss, logs = _loss_and_logs(ebt, batch)
    assert [k for k in logs if k.startswith("loss_step")] == ["loss_step1", "loss_step2"]
    torch.testing.assert_close(loss, (logs["loss_step1"] + logs["loss_step2"]) / 2)


def test_loss_on_defaults_to_every_step_and_to_the_last_with_truncate(tmp_path):
    assert make(tmp_path)[0].config.backprop.scored == "all"  # the default run: unchanged
    assert make(tmp_path, "model.objective.truncate=true")[0].config.backprop.scored == "last"


def test_loss_on_last_without_detaching_back_propagates_through_every_step_unlike_truncate(tmp_path):
    """loss_on=last + detach_steps=false: the final loss reaches the parameters through every (second-order) step;
    truncate=true keeps only the last step's second-order terms."""
    ebt, batch = make(tmp_path, "model.objective.loss_on=last", "model.objective.detach_steps=false",
                      "model.objective.steps=3")

    def head_grad():
        ebt.zero_grad()
        _loss_and_logs(ebt, batch)[0].backward()
        return ebt.energy_head.weight.grad.clone()

    full = head_grad()
    ebt.config.backprop = Backprop(detach_steps=False, truncate=True, loss_on=None)
    assert not torch.allclose(full, head_grad())


def test_truncate_with_loss_on_all_is_refused_naming_both(tmp_path):
    with pytest.raises(ConfigError, match="truncate=true .*loss_on=all"):
        make(tmp_path, "model.objective.truncate=true", "model.objective.loss_on=all")
    with pytest.raises(ConfigError, match="loss_on='first' is not one of all, last"):
        make(tmp_path, "model.objective.loss_on=first")


def test_old_stored_options_upgrade_to_what_they_ran(tmp_path):
    """Old checkpoints store ``loss_on: all`` (truncate overrode it): upgraded, it is null, which means the same."""
    old = {"loss_on": "all", "truncate": True, "steps": 2}
    assert EBT.upgrade_options(old) == {**ADDED_OPTIONS, "loss_on": None, "truncate": True, "steps": 2}
    assert EBT.upgrade_options({"loss_on": "last"}) == {**ADDED_OPTIONS, "loss_on": "last"}
    # options added since are filled with their defaults, which are the constructor's (the model as trained)
    defaults = EBTConfig().flat()
    assert {n: defaults[n] for n in ADDED_OPTIONS} == ADDED_OPTIONS
    assert EBT.upgrade_options({"landscapes": 3})["landscapes"] == 3


def test_continuous_loss_is_the_loss_of_every_scored_step(tmp_path):
    ebt, batch = make(tmp_path, "data=digits_denoise", "model.objective.init=input",
                      "model.objective.continuous_loss=smooth_l1")
    batch = ebt.task.make_batch("train", 0, 4)
    loss, _ = _loss_and_logs(ebt, batch)
    torch.manual_seed(1)
    thought = ebt.think(batch, steps=ebt.steps, training=True)
    targets = batch["targets"]
    expected = torch.stack([F.smooth_l1_loss(y, targets) for y in thought.candidates[1:]]).mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(expected, torch.stack([F.mse_loss(y, targets) for y in thought.candidates[1:]]).mean())
    assert prediction_loss(ebt.task, thought.candidates[-1], batch, "smooth_l1") > 0


# --------------------------------------------------------------------------------- training-time randomisation
def test_replay_mixes_stored_samples_and_their_final_candidates_into_the_configured_fraction(tmp_path, monkeypatch):
    ebt, _ = make(tmp_path, "model.objective.replay_size=8", "model.objective.replay_fraction=0.5")
    seen = []
    think = ebt.think

    def spy(batch, **kwargs):
        thought = think(batch, **kwargs)
        seen.append((batch, ebt.initial_candidate(batch) if kwargs["init"] is None else kwargs["init"], thought))
        return thought

    monkeypatch.setattr(ebt, "think", spy)
    first, second = ebt.task.make_batch("train", 0, 4), ebt.task.make_batch("train", 1, 4)
    ebt.loss(first)
    assert torch.equal(seen[0][0]["input_ids"], first["input_ids"])  # an empty buffer replays nothing
    assert len(ebt.replay) == 4
    ebt.loss(second)
    batch, init, _ = seen[1]
    assert torch.equal(batch["input_ids"][:2], second["input_ids"][:2])  # fresh: the first 1 - fraction
    stored = seen[0][2].candidates[-1].detach()
    for row in range(2, 4):  # replayed: a sample of the first batch, starting from its final candidate
        (match,) = [i for i in range(4) if torch.equal(batch["input_ids"][row], first["input_ids"][i])]
        assert torch.equal(init[row], stored[match])
        assert torch.equal(batch["targets"][row], first["targets"][match])


def test_the_replay_buffer_never_holds_more_than_its_size_nor_a_sample_twice():
    from ebt.objectives.replay import ReplayBuffer

    buffer = ReplayBuffer(3)
    ids = torch.arange(5)[:, None]  # (B, 1): each sample's identity
    buffer.add({"input_ids": ids}, ids.float())
    assert len(buffer) == 3 and buffer.samples["input_ids"].flatten().tolist() == [2, 3, 4]  # the newest, at once
    torch.manual_seed(0)
    for step in range(20):
        fresh = torch.full((2, 1), 100 + step)
        batch, init = buffer.mix({"input_ids": fresh}, fresh.float(), fraction=0.5)
        replayed = int(batch["input_ids"][1])
        assert replayed not in buffer.samples["input_ids"].flatten().tolist()  # drawn: out until added back
        buffer.add(batch, init + 1)
        stored = buffer.samples["input_ids"].flatten().tolist()
        assert len(stored) == len(set(stored)) <= 3
        row = buffer.samples["input_ids"].flatten().tolist().index(replayed)
        assert float(buffer.candidates[row]) == float(init[1]) + 1  # stored again with its new final candidate


def test_a_replay_buffer_that_can_never_hold_the_replayed_share_is_refused(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.replay_size=1", "model.objective.replay_fraction=0.5")
    with pytest.raises(ConfigError, match="replay_fraction=0.5 of a batch of 4 is 2 samples, .*replay_size=1"):
        ebt.loss(batch)
    with pytest.raises(ConfigError, match="replay_fraction must be in"):
        make(tmp_path, "model.objective.replay_size=8", "model.objective.replay_fraction=1.0")


def test_learn_langevin_after_makes_the_noise_scale_trainable_from_that_step(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.langevin_std=0.1", "model.objective.learn_langevin_after=2")
    trainable = [n for n, p in ebt.named_parameters() if p.requires_grad]
    assert "langevin" in trainable  # from the start: the set of trainable parameters never changes (DDP)
    optimizer = torch.optim.AdamW(optimizer_groups(ebt, 0.1, 1e-2))
    values = []
    for step in range(4):
        ebt.set_progress(step)
        optimizer.zero_grad()
        ebt.loss(batch)[0].backward()
        values.append((float(ebt.langevin.detach()), float(ebt.langevin.grad)))
        optimizer.step()
    assert [grad == 0 for _, grad in values] == [True, True, False, False], values
    assert values[0][0] == values[1][0] == values[2][0] == pytest.approx(0.1) != float(ebt.langevin.detach())
    assert [n for n, p in ebt.named_parameters() if p.requires_grad] == trainable
    fixed, _ = make(tmp_path, "model.objective.langevin_std=0.1")
    assert not fixed.langevin.requires_grad


def test_learning_a_noise_scale_of_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="learn_langevin_after .*langevin_std=0"):
        make(tmp_path, "model.objective.learn_langevin_after=10")


# -------------------------------------------------------------------------------------------------- evaluation
def test_eval_langevin_std_makes_evaluation_stochastic(tmp_path):
    ebt, batch = make(tmp_path)
    init = torch.randn(*batch["targets"].shape, 13)
    assert torch.equal(ebt.think(batch, steps=2, init=init).candidates[-1],
                       ebt.think(batch, steps=2, init=init).candidates[-1])
    noisy, _ = make(tmp_path, "model.objective.eval_langevin_std=0.1")
    a, b = (noisy.think(batch, steps=2, init=init).candidates[-1] for _ in range(2))
    assert not torch.allclose(a, b)
    torch.manual_seed(3)
    first = noisy.evaluate(batch)["loss"]
    torch.manual_seed(4)
    assert noisy.evaluate(batch)["loss"] != first


# ---------------------------------------------------------------------------------------- how y is read / scored
def test_time_embedding_lets_the_energy_differ_between_steps(tmp_path):
    plain, batch = make(tmp_path)
    y = torch.randn(*batch["targets"].shape, 13)
    energy = plain.energy_function(batch)
    torch.testing.assert_close(energy(y, 0), energy(y, 1), atol=0, rtol=0)  # without: the same energy every step
    timed, _ = make(tmp_path, "model.objective.time_embedding=true")
    energy = timed.energy_function(batch)
    torch.testing.assert_close(energy(y, 0), energy(y, 1), atol=0, rtol=0)  # zero-initialised: starts the same
    with torch.no_grad():
        timed.time_embedding.weight.normal_()
    assert not torch.allclose(energy(y, 0), energy(y, 1))
    loss, _ = timed.loss(batch)
    loss.backward()
    grad = timed.time_embedding.weight.grad.abs().sum(-1)
    assert (grad[:2] > 0).all() and (grad[2:] == 0).all()  # training thinks 2 steps: their embeddings learn


def test_tie_candidate_projection_reads_the_candidate_through_the_token_embedding(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.tie_candidate_projection=true")
    assert ebt.candidate_proj is None and "candidate_proj.weight" not in ebt.state_dict()
    y = torch.randn(*batch["targets"].shape, 13)
    torch.testing.assert_close(ebt.read_candidate(y, 0), y.softmax(-1) @ ebt.encoder.weight)
    before = ebt.energy_function(batch)(y, 0)
    with torch.no_grad():
        ebt.encoder.weight[:, 0] += 1.0  # the token embedding is the candidate's projection too
    assert not torch.allclose(ebt.energy_function(batch)(y, 0), before)
    cfg = compose_config(["model/objective=ebt", "model.dim=32", "kernels=torch", "data=digits_denoise",
                          "model.objective.init=input", "model.objective.tie_candidate_projection=true"], tmp_path)
    with pytest.raises(ConfigError, match="tie_candidate_projection=true needs a tokens task"):
        build_lit_model(cfg, build_task(cfg))


# --------------------------------------------------------------------------- supervising the energy landscape
def test_contrastive_term_is_weight_times_softplus_of_the_energy_gap_of_target_and_corruption(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.contrastive_weight=0.5")
    plain, _ = make(tmp_path)
    torch.manual_seed(3)
    loss, logs = ebt.loss(batch)
    torch.manual_seed(3)
    base, _ = plain.loss(batch)
    assert "contrastive_loss" in logs and "energy_margin" in logs
    torch.testing.assert_close(loss, base + 0.5 * logs["contrastive_loss"])
    assert logs["contrastive_loss"] > 0


def test_contrastive_candidates_differ_from_the_target_only_where_scored():
    from ebt.objectives.contrastive import Contrastive, corrupted_candidate, positive_candidate
    from ebt.tasks.addition import Addition

    task = Addition(n_digits=3)
    batch = task.make_batch("train", 0, 16)
    options = Contrastive(weight=1.0, corrupt=0.3)
    like = torch.randn(*batch["targets"].shape, task.vocab_size)
    positive = positive_candidate(task, batch, like, options)
    scored = batch["targets"] != -100
    assert torch.equal(positive[~scored], like[~scored])
    assert torch.equal(positive[scored].argmax(-1), batch["targets"][scored])
    torch.manual_seed(0)
    negative = corrupted_candidate(task, batch, positive, options)
    assert torch.equal(negative[~scored], like[~scored])
    wrong = (negative.argmax(-1) != batch["targets"]) & scored
    assert wrong.any(dim=1)[scored.any(dim=1)].all()  # at least one wrong token per scored row
    assert 0.2 < wrong.sum() / scored.sum() < 0.5  # about the corrupt fraction (+ the one forced per row)


def test_contrastive_prediction_negatives_and_continuous_tasks_train(tmp_path):
    for extra in (["model.objective.contrastive_negatives=prediction"],
                  ["data=digits_denoise", "model.objective.init=input", "model.objective.contrastive_corrupt=0.2"]):
        ebt, batch = make(tmp_path, "model.objective.contrastive_weight=1", *extra)
        batch = ebt.task.make_batch("train", 0, 4)
        loss, logs = ebt.loss(batch)
        loss.backward()
        assert torch.isfinite(loss) and logs["contrastive_loss"] > 0
        missing = [n for n, p in ebt.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing}"


def test_contrastive_training_puts_the_target_below_its_corruptions(tmp_path):
    """A few steps of the contrastive term alone (task loss off by weight) open a positive energy margin."""
    ebt, batch = make(tmp_path, "model.objective.contrastive_weight=1")
    optimiser = torch.optim.Adam(ebt.parameters(), lr=3e-3)
    margins = []
    for _ in range(30):
        torch.manual_seed(0)
        term, margin = ebt._contrastive_term(batch, ebt.initial_candidate(batch), ebt.steps)
        optimiser.zero_grad()
        term.backward()
        optimiser.step()
        margins.append(float(margin))
    assert margins[-1] > margins[0] + 0.5 and margins[-1] > 0.5


@pytest.mark.parametrize(("option", "message"), [("contrastive_weight=-1", "contrastive_weight must be >= 0"),
                                                 ("contrastive_negatives=random", "is not one of corrupt, prediction"),
                                                 ("contrastive_corrupt=0", "contrastive_corrupt must be > 0"),
                                                 ("contrastive_count=0", "contrastive_count must be >= 1")])
def test_bad_contrastive_options_are_refused(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        make(tmp_path, f"model.objective.{option}")
    with pytest.raises(ConfigError, match="prediction gives one negative per sample"):
        make(tmp_path, "model.objective.contrastive_negatives=prediction", "model.objective.contrastive_count=4")


def test_infonce_over_n_negatives_is_the_cross_entropy_of_picking_the_target_by_lowest_energy(tmp_path):
    from ebt.objectives.contrastive import contrastive_loss

    positive, negatives = torch.tensor([0.5, -1.0]), [torch.tensor([1.0, -2.0]), torch.tensor([0.0, 3.0])]
    by_hand = -torch.log(torch.exp(-positive) / (torch.exp(-positive) + sum(torch.exp(-n) for n in negatives)))
    torch.testing.assert_close(contrastive_loss(positive, negatives, None), by_hand.mean())
    torch.testing.assert_close(contrastive_loss(positive, negatives[:1], None),
                               F.softplus(positive - negatives[0]).mean())  # N = 1: IRED's softplus
    ebt, batch = make(tmp_path, "model.objective.contrastive_weight=1", "model.objective.contrastive_count=4")
    term, _ = ebt._contrastive_term(batch, ebt.initial_candidate(batch), ebt.steps)
    # an untrained energy barely tells the 5 candidates apart: the loss is near log 5 (log 2 with one negative)
    assert abs(float(term.detach()) - math.log(5)) < 0.2


def test_landscape_schedule_anneals_from_the_smoothest_and_stays_on_the_sharpest():
    from ebt.objectives.landscapes import Landscapes

    ladder = Landscapes(count=3, steps=2, noise=1.5)
    assert [ladder.index(i) for i in range(8)] == [2, 2, 1, 1, 0, 0, 0, 0]
    assert [ladder.first_step(k) for k in range(3)] == [4, 2, 0]
    assert [ladder.sigma(k) for k in range(3)] == [0.5, 1.0, 1.5]
    geometric = Landscapes(count=3, noise=2.0, schedule="geometric", min_noise=0.01)
    assert [geometric.sigma(k) for k in range(3)] == pytest.approx([0.02, 0.2, 2.0])  # down to 1 % of the noise
    with pytest.raises(ConfigError, match="landscape_schedule='cosine' is not one of linear, geometric, loguniform"):
        Landscapes(schedule="cosine")


def test_loguniform_noise_draws_each_samples_scale_from_the_whole_range():
    from ebt.objectives.landscapes import Landscapes

    torch.manual_seed(0)
    noise = Landscapes(noise=2.0, schedule="loguniform", min_noise=0.01).noise_like(0, torch.zeros(4000, 16, 3))
    scale = noise.flatten(1).std(dim=1)  # one sigma per sample, shared by its entries
    assert scale.min() < 0.03 and scale.max() > 1.7  # from about 0.02 to 2.0
    log_scale = scale.log()  # log-uniform: uniform in [log 0.02, log 2]
    quartiles = torch.quantile(log_scale, torch.tensor([0.25, 0.5, 0.75]))
    expected = math.log(0.02) + torch.tensor([0.25, 0.5, 0.75]) * (math.log(2.0) - math.log(0.02))
    torch.testing.assert_close(quartiles, expected, atol=0.15, rtol=0)
    fixed = Landscapes(noise=2.0).noise_like(0, torch.zeros(4000, 16, 3))
    assert abs(float(fixed.std()) - 2.0) < 0.05  # the other schedules: one sigma for the batch
    with pytest.raises(ConfigError, match="loguniform draws each sample's noise .*landscapes=2"):
        Landscapes(count=2, schedule="loguniform")


def test_each_thinking_step_reads_its_landscape_and_long_trajectories_extend_short_ones(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.landscapes=3", "model.objective.steps=3")
    with torch.no_grad():
        ebt.landscape_embedding.weight.normal_()  # zero-initialised: make the landscapes differ
    read = []
    original = ebt.read_candidate
    ebt.read_candidate = lambda y, step: (read.append(ebt.config.landscapes.index(step)), original(y, step))[1]
    init = ebt.initial_candidate(batch)
    long = ebt.think(batch, steps=5, init=init).candidates
    assert read == [2, 1, 0, 0, 0]
    short = ebt.think(batch, steps=2, init=init).candidates
    torch.testing.assert_close(short[-1], long[2])
    flat, _ = make(tmp_path, "model.objective.steps=3")
    assert flat.landscape_embedding is None


def test_denoising_supervision_adds_one_step_from_the_noisy_target_on_a_random_landscape(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.landscapes=2", "model.objective.landscape_weight=0.5",
                      "model.objective.landscape_noise=2.0", "model.objective.steps=2")
    calls = []
    think = ebt.think
    ebt.think = lambda b, **kw: (calls.append(kw), think(b, **kw))[1]
    loss, logs = ebt.loss(batch)
    loss.backward()
    assert logs["denoise_loss"] > 0 and torch.isfinite(loss)
    (denoise,) = [kw for kw in calls if kw.get("start") is not None]
    assert denoise["steps"] == 1 and denoise["start"] in (0, 1) and denoise["training"]
    sigma = 2.0 * (1 - denoise["start"] + 1) / 2  # start 0 = landscape 1 (smoothest), start 1 = landscape 0
    scored = batch["targets"] != -100
    spread = (denoise["init"][scored] - 5.0 * torch.nn.functional.one_hot(batch["targets"][scored], 13)).std()
    assert 0.6 * sigma < spread < 1.4 * sigma
    missing = [n for n, p in ebt.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize(("option", "message"), [("landscapes=0", "landscapes must be >= 1"),
                                                 ("landscape_steps=0", "landscape_steps must be >= 1"),
                                                 ("landscape_noise=0", "landscape_noise must be > 0"),
                                                 ("landscape_weight=-0.1", "landscape_weight must be >= 0")])
def test_bad_landscape_options_are_refused(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        make(tmp_path, f"model.objective.{option}")


def test_energy_reduce_sum_is_n_times_the_mean_and_so_is_its_gradient(tmp_path):
    """Whole-target tasks: ``energy_reduce=sum`` does not divide each token's ``dE/dy`` by the N tokens."""
    denoise = ("data=digits_denoise", "model.objective.init=input")
    mean, batch = make(tmp_path, *denoise)
    summed, _ = make(tmp_path, *denoise, "model.objective.energy_reduce=sum")
    summed.load_state_dict(mean.state_dict())
    assert not mean.autoregressive
    y = mean.initial_candidate(batch).requires_grad_()
    energies = [model.energy_function(batch)(y, 0) for model in (mean, summed)]
    n = batch["inputs"].shape[1]
    torch.testing.assert_close(energies[1], n * energies[0])
    grads = [torch.autograd.grad(e.sum(), y)[0] for e in energies]
    torch.testing.assert_close(grads[1], n * grads[0])
    causal_mean, causal_batch = make(tmp_path, "model.objective.energy_reduce=mean")  # addition: one energy a position
    causal_sum, _ = make(tmp_path, "model.objective.energy_reduce=sum")
    causal_sum.load_state_dict(causal_mean.state_dict())
    y = causal_mean.initial_candidate(causal_batch)
    torch.testing.assert_close(causal_sum.energy_function(causal_batch)(y, 0),
                               causal_mean.energy_function(causal_batch)(y, 0))  # the same model there


def test_squared_energy_is_the_mean_square_of_a_d_wide_head_and_is_zero_where_it_vanishes(tmp_path):
    """``energy_form=squared``: IRED's ``E = ||f(x, y)||^2`` per token (divided by D), never below 0; where the head's
    output is 0 the energy is at its minimum and ``dE/dy`` vanishes."""
    ebt, batch = make(tmp_path, "model.objective.energy_form=squared")
    assert ebt.energy_head.weight.shape == (ebt.backbone.out_dim, ebt.backbone.out_dim)
    y = ebt.initial_candidate(batch).requires_grad_()
    energy = ebt.energy_function(batch)(y, 0)
    assert energy.shape == batch["targets"].shape and (energy >= 0).all() and (energy > 0).any()
    with torch.no_grad():
        ebt.energy_head.weight.zero_()
    flat = ebt.energy_function(batch)(y, 0)
    assert (flat == 0).all() and (torch.autograd.grad(flat.sum(), y)[0] == 0).all()
    with pytest.raises(ConfigError, match="energy_form='cubic' is not one of linear, squared"):
        make(tmp_path, "model.objective.energy_form=cubic")


def test_prediction_negatives_can_come_from_longer_thinking(tmp_path):
    """``contrastive_prediction_steps=n``: the negative is where n steps of evaluation-time thinking end."""
    options = ("contrastive_weight=1", "contrastive_negatives=prediction", "contrastive_prediction_steps=8")
    ebt, batch = make(tmp_path, *(f"model.objective.{o}" for o in options))
    calls, think = [], ebt.think
    ebt.think = lambda b, **k: (calls.append((k["steps"], k.get("training", False))), think(b, **k))[1]
    loss, logs = ebt.loss(batch)
    assert (8, False) in calls and torch.isfinite(loss) and "contrastive_loss" in logs
    with pytest.raises(ConfigError, match="contrastive_prediction_steps is the thinking steps of the prediction"):
        make(tmp_path, "model.objective.contrastive_weight=1", "model.objective.contrastive_prediction_steps=8")
