"""``SweepComposer``: each job of a multirun composed fast, and exactly as Hydra composes it.

Every job's whole config (the hydra node included, its node types and flags, its resolver
cache) must equal Hydra's own ``load_sweep_config``; what the fast path can't do exactly is
composed by Hydra, and a bad job raises Hydra's own error. The population launcher writes
each job's ``.hydra/`` files and ``JobReturn`` as Hydra's ``run_job`` does.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import run_job
from hydra.types import HydraContext, RunMode
from omegaconf import Container, OmegaConf, open_dict

from mlplab.config import CONF_DIR
from mlplab.population.jobs import as_job, job_return, prepare, save_hydra_files
from mlplab.population.sweep_compose import SweepComposer, install

SWEEP = [
    "optimizer=sgd,adam",  # a config group: one Hydra composition each
    "optimizer.lr=0.01,0.1",
    "model.hidden_sizes=[8],[8,8]",  # lists: different architectures
    "+trainer.max_steps=3",  # an addition, a deletion, a forced one: in the composed base
    "~callbacks.learning_curves",
    "++trainer.max_epochs=2",
    "run_name='a b','c,d'",  # quoted strings
    "trainer.gradient_clip_val=null",
]


@pytest.fixture
def hydra_app():
    """Hydra as ``mlplab-train`` starts it (its config loader, the ``train`` job name)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
        yield GlobalHydra.instance().hydra


def _master(hydra_app, tmp_path, *hydra_lines: str):
    """The multirun's config, as Hydra composes it before its sweeper starts."""
    lines = ["hydra/launcher=population", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}"]
    lines += ["+hydra.job.env_set.STARTED=${now:%H-%M-%S-%f}", "+hydra.job.env_set.LATER=${now:%f}"]
    lines += [*hydra_lines, *SWEEP]
    master = hydra_app.compose_config("train", lines, run_mode=RunMode.MULTIRUN)
    assert master.hydra.job.env_set.STARTED  # resolved once, cached: each job keeps it
    assert OmegaConf.get_cache(master)
    return master


def _batch(lines: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of these command-line lines."""
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)[0]


def _nodes(node, path: str = "") -> list[tuple]:
    """Every node's path, type, declared types and flags (what to_container doesn't show)."""
    meta = node._metadata
    types = (meta.object_type, meta.ref_type, getattr(meta, "element_type", None))
    out = [(path, type(node).__name__, str(types), meta.optional, dict(meta.flags or {}))]
    if isinstance(node, Container) and isinstance(node._content, dict | list):
        content = node._content
        items = content.items() if isinstance(content, dict) else enumerate(content)
        out += [n for key, child in items for n in _nodes(child, f"{path}.{key}")]
    return out


def _assert_same(ours, hydras) -> None:
    assert OmegaConf.to_container(ours, resolve=False) == OmegaConf.to_container(
        hydras, resolve=False
    )
    assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras)
    assert _nodes(ours) == _nodes(hydras)
    assert OmegaConf.get_cache(ours) == OmegaConf.get_cache(hydras)


def test_every_job_config_is_hydras_with_one_composition_per_group_choice(hydra_app, tmp_path):
    # override_dirname leaves run_name out: what Hydra's node derives from the lines counts
    exclude = "hydra.job.config.override_dirname.exclude_keys=[run_name]"
    master = _master(hydra_app, tmp_path, exclude)
    loader = hydra_app.config_loader
    composer = SweepComposer(loader)
    jobs = _batch(SWEEP)
    assert len(jobs) == 16
    for i, job in enumerate(jobs):
        if i == 4:  # the master's resolver cache grows: later jobs get it, as from Hydra
            assert master.hydra.job.env_set.LATER
        ours, hydras = composer(master, job), loader.load_sweep_config(master, job)
        _assert_same(ours, hydras)
        assert list(ours.hydra.overrides.task) == job
    assert composer.composed == 2  # sgd, adam: every other job is a copy of one of them
    last = composer(master, jobs[-1])
    assert last.run_name == "c,d" and last.optimizer._target_.endswith("Adam")
    assert "run_name" not in last.hydra.job.override_dirname
    assert "optimizer.lr=0.1,optimizer=adam" in last.hydra.job.override_dirname


@pytest.mark.parametrize(
    ("hydra_lines", "sweep"),
    [
        ([], "optimizer.lr=0.1,0.3 ++optimizer.lr=0.2"),  # Hydra: the later line wins
        ([], "model.dropout=0.2,0.3 ~model.dropout"),
        ([], "model.hidden_sizes=[4],[6] model={hidden_sizes:[5]}"),
        ([f"hydra.searchpath=[file://{CONF_DIR}]"], "optimizer.lr=0.1,0.2"),  # more groups
    ],
)
def test_what_the_fast_path_cant_do_exactly_hydra_composes(hydra_app, tmp_path, hydra_lines, sweep):
    master = _master(hydra_app, tmp_path, *hydra_lines)
    loader = hydra_app.config_loader
    composer = SweepComposer(loader)
    jobs = _batch(sweep.split())
    assert len(jobs) == 2
    for lines in jobs:
        _assert_same(composer(master, lines), loader.load_sweep_config(master, lines))
    assert composer.composed == 2  # each job by Hydra, not one base for both


@pytest.mark.parametrize(
    "job",
    [
        ["model.nope=1"],  # not a key
        ["seed=abc"],  # the schema's type
        ["+seed=1"],  # already there
        ["optimizer=sgd", "optimizer.betas=[0.9,0.99]"],  # adam's key, not sgd's
        ["optimizer=nope"],  # no such option: the base itself fails
        ["seed=[1"],  # doesn't parse
    ],
)
def test_a_bad_job_raises_hydras_own_error(hydra_app, tmp_path, job):
    master = _master(hydra_app, tmp_path)
    loader = hydra_app.config_loader
    composer = SweepComposer(loader)
    composer(master, ["seed=1"])  # a good job first: the base is composed and kept
    with pytest.raises(Exception) as hydras:
        loader.load_sweep_config(master, job)
    with pytest.raises(Exception) as ours:
        composer(master, job)
    assert type(ours.value) is type(hydras.value)
    assert _messages(ours.value) == _messages(hydras.value)


def _messages(err: BaseException | None) -> list[str]:
    """The error and its causes, as Hydra prints them."""
    out = []
    while err is not None:
        out.append(f"{type(err).__name__}: {err}")
        err = err.__cause__
    return out


def test_install_wraps_this_loader_once(hydra_app):
    loader = hydra_app.config_loader
    install(loader)
    composer = loader.load_sweep_config
    install(loader)  # the launcher's setup runs again: still the same one
    assert isinstance(composer, SweepComposer) and loader.load_sweep_config is composer
    other = type(loader)(config_search_path=loader.config_search_path)  # another run's
    assert not isinstance(other.load_sweep_config, SweepComposer)


def test_job_files_and_return_are_run_jobs(hydra_app, tmp_path):
    """``.hydra/{config,hydra,overrides}.yaml`` and ``JobReturn.hydra_cfg`` byte for byte."""
    master = _master(hydra_app, tmp_path)
    loader = hydra_app.config_loader
    context = HydraContext(config_loader=loader, callbacks=Callbacks())
    job, num = _batch(SWEEP)[5], 5
    config = loader.load_sweep_config(master, job)
    with open_dict(config):
        config.hydra.job.id = config.hydra.job.num = num
    dirs = ("hydra.sweep.dir", "hydra.sweep.subdir")
    ret = run_job(lambda cfg: None, config, *dirs, context, configure_logging=False)
    files = sorted((tmp_path / str(num) / ".hydra").iterdir())
    hydras = {p.name: p.read_text() for p in files}
    for p in files:
        p.unlink()

    install(loader)
    ours = prepare(SimpleNamespace(hydra_context=context, config=master), job, num)
    save_hydra_files(ours)
    assert {p.name: p.read_text() for p in files} == hydras
    assert len(hydras) == 3
    (ours.dir / "metrics.json").write_text('{"test/acc": 0.5}')
    with as_job(ours.view):
        ours_ret = job_return(ours, "ok", None)
    assert ours_ret.overrides == ret.overrides == job
    assert ours_ret.return_value == {"test/acc": 0.5}
    assert OmegaConf.to_yaml(ours_ret.hydra_cfg) == OmegaConf.to_yaml(ret.hydra_cfg)
    assert _nodes(ours_ret.hydra_cfg) == _nodes(ret.hydra_cfg)
