"""The method layer: declarations drive validation, options and help; the
ideal variant's rule; outputs are never lost or silently replaced."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi.api import ResultNotWritten, make_config, save_result
from psmpi.cli import main
from psmpi.compressors import make_compressor
from psmpi.errors import ConfigError, MethodError, PsmpiError
from psmpi.methods import REGISTRY, Hyper, WorkerContext, all_params, get_method
from psmpi.problems import Quadratic
from psmpi.runtime.common import common_rng, worker_rng

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ declarations ---
def test_every_method_declares_its_rule_paper_step_and_parameters():
    for name, cls in REGISTRY.items():
        doc = cls.__doc__ or ""
        assert cls.paper and "worker:" in doc and "master:" in doc, name
        assert "theory:" in doc and cls.theory, name
        for p in cls.params:
            assert p.help and p.kind in ("float", "int", "batch", "compressor", "participation"), (name, p.name)


def test_a_hyper_parameter_name_has_one_meaning_across_methods():
    seen = {}
    for cls in REGISTRY.values():
        for p in cls.params:
            same = (p.kind, p.help, p.low, p.high, p.low_closed, p.in_theory, p.symbol)
            assert seen.setdefault(p.name, same) == same, p.name  # defaults may differ (batch size)


@pytest.mark.parametrize("name", list(all_params()))
def test_every_declared_parameter_is_a_train_option_and_refused_by_methods_without_it(name):
    flag = "--" + name.replace("_", "-")
    out = CliRunner().invoke(main, ["train", "--help"], terminal_width=400).output
    assert flag in out
    users = [m for m, c in REGISTRY.items() if c.param(name) is not None]
    others = [m for m in REGISTRY if m not in users]
    for m in others:
        with pytest.raises(MethodError, match=re.escape(f"takes no {flag}") + "|" + re.escape(f"does not use {flag}")):
            make_config({"method": m, name: 1})
    for m in users:
        p = REGISTRY[m].param(name)
        given = p.default or {"batch": 1, "compressor": "topk:1", "participation": 1}.get(p.kind, 0.5)
        cfg = make_config({"method": m, name: given})
        assert name in cfg.to_dict()


def test_readme_method_table_is_the_registry_declarations():
    """README's table is made from the same declarations as --help (scripts/method_table.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("method_table", ROOT / "scripts" / "method_table.py")
    mt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mt)
    text = (ROOT / "README.md").read_text()
    assert mt.rewritten(text) == text, "README.md's method table is stale: python scripts/method_table.py"
    table = re.findall(r"^\| `([a-z0-9][a-z0-9-]*)` \|", text.split("## Methods", 1)[1].split("##", 1)[0], re.M)
    assert table == list(REGISTRY)


def test_batch_size_is_refused_by_exact_gradient_methods_naming_the_stochastic_sibling():
    with pytest.raises(MethodError, match="its minibatch version is 'ef21-sgd'"):
        psmpi.train(method="ef21", batch_size=1, iters=2, workers=2, quiet=True)


# ------------------------------------------------------------ ideal variant ---
def _fixed_point_noise(method: str, eta: float, rounds=3000, d=10, sigma=1.0) -> float:
    """E||g_i - grad f_i||^2 / (d sigma^2) at a fixed x of f = 1/2||x||^2, identity C."""
    m = get_method(method)
    comp = m.prepare_compressor(make_compressor("identity", d, "float64"))
    hp = Hyper(1, 0.0, **m.resolve({"eta": eta, "batch_size": 1}, comp))
    ctx = WorkerContext(0, Quadratic(np.eye(d), noise=sigma), comp, worker_rng(1, 0), common_rng(1), hp, "float64")
    x = np.ones(d)
    ctx.round = 0
    st, _ = m.worker_init(ctx, x)
    err = []
    for t in range(1, rounds + 1):
        ctx.round = t
        st, _ = m.worker_step(ctx, st, x)
        if t > 100:  # past the moving average's transient
            err.append(np.sum((st.g - x) ** 2))
    return float(np.mean(err)) / (d * sigma ** 2)


def test_ef21_sgdm_ideal_has_no_memory_its_noise_is_eta_squared():
    """The paper's rule v = grad + eta (stochastic - grad): variance eta^2 sigma^2 per
    coordinate (0.01 at eta = 0.1), where a moving average gives eta/(2 - eta) = 0.053."""
    r = _fixed_point_noise("ef21-sgdm-ideal", 0.1)
    assert 0.0085 < r < 0.0115, r
    assert _fixed_point_noise("ef21-sgdm", 0.1) > 0.04  # the real method keeps a moving average


# ----------------------------------------------------------------- outputs ---
def test_a_result_that_cannot_be_written_at_the_end_is_kept_elsewhere(tmp_path, monkeypatch):
    res = psmpi.train(iters=3, workers=2, quiet=True)
    import psmpi.results as results

    real = results.write_result

    def failing(path, r):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied")
        real(path, r)

    monkeypatch.setattr(results, "write_result", failing)
    with pytest.raises(ResultNotWritten) as ei:
        save_result(str(tmp_path / "o.h5"), res)
    msg = str(ei.value)
    assert "\n" not in msg and "saved to" in msg
    kept = msg.rsplit("saved to ", 1)[1]
    assert Path(kept).exists() and res.out == kept
    assert np.array_equal(psmpi.results.read_result(kept).x, res.x)
    Path(kept).unlink()


def _train_cli(tmp_path, *args):
    return CliRunner().invoke(main, ["train", "--iters", "3", "--workers", "2", "-q", *args])


def test_default_output_names_never_replace_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        assert _train_cli(tmp_path).exit_code == 0
    assert _train_cli(tmp_path, "--gamma-factor", "2").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == ["ef21_breast-cancer_topk1.h5", "ef21_breast-cancer_topk1_2.h5",
                     "ef21_breast-cancer_topk1_3.h5", "ef21_breast-cancer_topk1_4.h5"]


def test_an_existing_out_file_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "o.h5"
    assert _train_cli(tmp_path, "--out", str(out)).exit_code == 0
    before = out.stat().st_mtime_ns
    r = _train_cli(tmp_path, "--out", str(out), "--seed", "3")
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.output
    assert out.stat().st_mtime_ns == before
    assert _train_cli(tmp_path, "--out", str(out), "--seed", "3", "--overwrite").exit_code == 0


def test_yaml_errors_name_the_line_and_every_unknown_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ef21\niters: [1, 2\n")
    r = _train_cli(tmp_path, "--config", str(bad))
    assert r.exit_code == 2 and re.search(r"not valid YAML at line \d+", r.output)
    keys = tmp_path / "keys.yaml"
    keys.write_text("method: ef21\nwokers: 3\nitres: 5\n")
    r = _train_cli(tmp_path, "--config", str(keys))
    assert r.exit_code == 2
    assert "'wokers' (line 2) (did you mean 'workers'?)" in r.output
    assert "'itres' (line 3) (did you mean 'iters'?)" in r.output


def test_label_is_a_command_line_option(tmp_path):
    out = tmp_path / "l.h5"
    assert _train_cli(tmp_path, "--out", str(out), "--label", "my run").exit_code == 0
    assert psmpi.results.read_result(str(out)).config["label"] == "my run"


def test_errors_are_one_psmpi_error_type():
    for exc in (ConfigError, MethodError):
        assert issubclass(exc, PsmpiError)
    from psmpi.compressors import CompressorError
    from psmpi.data import DataError

    assert issubclass(CompressorError, PsmpiError) and issubclass(DataError, PsmpiError)


def test_api_result_out_is_none_when_nothing_was_written():
    res = psmpi.train(iters=2, workers=2, quiet=True)
    assert res.out is None


# ------------------------------------------------------------ theory steps ---
@pytest.mark.parametrize("method", ["ef21-sgdm", "ef21-sgd2m"])
@pytest.mark.parametrize("eta", [1.0, 0.1, 0.01])
def test_momentum_methods_converge_with_their_theory_step_for_every_eta(method, eta):
    """f = 1/2||x||^2, d = 2, Top-1, 4 workers, exact gradients: EF21's step (which
    ignores eta) sent EF21-SGD2M from ||grad f||^2 = 2 to 3e4 (eta = 0.1) and 5e5
    (eta = 0.01) in 600 rounds; the theorem's min{alpha/(20 L~), eta/(7 L)} converges."""
    r = psmpi.train(method=method, compressor="topk:1", dataset="quad:identity,d=2,noise=0", workers=4, x0="ones",
                    eta=eta, batch_size=1, iters=3000, eval_every=50, quiet=True, value_dtype="float64")
    g = r.metrics["grad_norm_sq"]
    assert r.gamma == pytest.approx(min(0.5 / 20, eta / 7))  # L = L~ = 1, alpha = 1/2
    assert g.max() <= g[0] and g[-1] < 1e-3 * g[0], (g[0], g.max(), g[-1])


def test_theory_steps_match_the_papers_formulas_computed_here():
    import math

    base = dict(dataset="synthetic:rows=200,features=20", workers=4, quiet=True, iters=1)
    r = psmpi.train(method="diana", compressor="randk:2", **base)
    L, omega, n = r.config["L"], 20 / 2 - 1, 4
    assert r.gamma == pytest.approx(1 / (10 * L * math.sqrt(1 + omega / n) * (omega + 2)), rel=1e-12)
    assert r.config["shift_step"] == pytest.approx(1 / (omega + 1))
    r = psmpi.train(method="ef21-sgdm", compressor="topk:2", eta=0.05, **base)
    assert r.gamma == pytest.approx(min((2 / 20) / (20 * r.config["L_tilde"]), 0.05 / (7 * r.config["L"])), rel=1e-12)
    # CLAG: 1/(L + L~ sqrt(B/A)) at the s minimising B(s)/A(s), found here by a fine grid
    for zeta in (0.5, 4.0, 50.0):
        r = psmpi.train(method="clag", compressor="topk:2", zeta=zeta, **base)
        alpha = 2 / 20
        s = np.linspace(1e-4, 1 / (1 - alpha) - 1 - 1e-6, 200001)
        A, B = 1 - (1 - alpha) * (1 + s), np.maximum((1 - alpha) * (1 + 1 / s), zeta)
        best = np.min(B / A)
        expect = 1 / (r.config["L"] + r.config["L_tilde"] * math.sqrt(best))
        assert r.gamma == pytest.approx(expect, rel=1e-6), zeta
    r = psmpi.train(method="lag", compressor="identity", zeta=4.0, **base)
    assert r.gamma == pytest.approx(1 / (r.config["L"] + r.config["L_tilde"] * 2.0), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.5])
@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_ef21_pp_constants_are_the_minimum_over_s_and_rho(alpha, p):
    """B/theta_p of Theorem 7 (p_i = p) minimised by a brute-force grid over (s, rho) here;
    pp_constants (rho in closed form) may only be lower, and by little; at p = 1 it is EF21's."""
    from psmpi.methods.ef21_pp import pp_constants

    q = 1 - alpha
    s = np.geomspace((1 / q - 1) * 1e-4, (1 / q - 1) * (1 - 1e-6), 1500)[:, None]
    theta, beta = 1 - q * (1 + s), q * (1 + 1 / s)
    if p == 1.0:
        brute = float(np.min(beta / theta))
    else:
        rho = np.geomspace(1e-5, 1 - 1e-6, 1500)[None, :] * p * theta / (1 - p)
        brute = float(np.min((beta * p + (1 + 1 / rho) * (1 - p)) / (p * theta - rho * (1 - p))))
    got = pp_constants(alpha, p)
    assert got <= brute * (1 + 1e-9) and got >= brute * (1 - 1e-3)
    if p == 1.0:
        theta_, beta_ = 1 - np.sqrt(q), q / (1 - np.sqrt(q))
        assert got == pytest.approx(beta_ / theta_, rel=1e-6)


def test_a_theory_step_or_default_that_needs_an_unknown_alpha_is_a_one_line_error():
    """PowerSGD has no contraction alpha: with known smoothness constants, --gamma theory
    of a method whose step uses alpha is refused in one line, and an explicit step runs
    with no theory step on record; a default that is alpha (3PCv5's p) is refused too."""
    from psmpi.runtime.common import Constants, plan_run

    blocks, consts = ((0, (3, 4)),), Constants(1.0, 1.0, [1.0, 1.0])
    for method in ("ef21", "ef14", "clag"):
        cfg = make_config({"method": method, "compressor": "powersgd:1", "workers": 2})
        with pytest.raises(ConfigError) as ei:
            plan_run(cfg, 12, consts, blocks)
        assert str(ei.value) == ("--gamma theory: powersgd:1 has no known contraction parameter alpha (biased, "
                                 "no guarantee), so theory gives no step: pass --gamma STEP")
        cfg = make_config({"method": method, "compressor": "powersgd:1", "workers": 2, "gamma": 0.1})
        plan = plan_run(cfg, 12, consts, blocks)
        assert plan.gamma_theory is None and plan.hp.gamma == 0.1
    cfg = make_config({"method": "3pcv5", "compressor": "powersgd:1", "workers": 2, "gamma": 0.1})
    with pytest.raises(MethodError, match="--p defaults to a constant of the compressor"):
        plan_run(cfg, 12, consts, blocks)
    cfg = make_config({"method": "3pcv5", "compressor": "powersgd:1", "workers": 2, "gamma": 0.1, "p": 0.5})
    assert plan_run(cfg, 12, consts, blocks).hp.p == 0.5


def test_theory_that_assumes_independent_compressors_refuses_the_correlated_permk():
    """DCGD's, DIANA's and MARINA's steps use omega/n, which holds for independent
    compressors; PermK's are correlated across workers: --gamma theory is refused in one
    line (an explicit step runs, with no theory step on record).  EF21 needs each worker's
    compressor contractive on its own (C/n for PermK): its theory step stands."""
    from psmpi.methods.base import ef21_gamma
    from psmpi.runtime.common import Constants, plan_run

    consts = Constants(2.0, 3.0, [3.0] * 4)
    for method in ("dcgd", "diana", "marina"):
        assert REGISTRY[method].independent_compressors
        cfg = make_config({"method": method, "compressor": "permk", "workers": 4})
        with pytest.raises(MethodError) as ei:
            plan_run(cfg, 12, consts)
        assert "assumes independent compressors and permk is correlated across workers" in str(ei.value)
        assert "\n" not in str(ei.value)
        plan = plan_run(make_config({"method": method, "compressor": "permk", "workers": 4, "gamma": 0.1}), 12, consts)
        assert plan.gamma_theory is None and plan.hp.gamma == 0.1
        assert plan_run(make_config({"method": method, "compressor": "randk:3", "workers": 4}), 12, consts).hp.gamma > 0
    plan = plan_run(make_config({"method": "ef21", "compressor": "permk", "workers": 4}), 12, consts)
    assert plan.hp.gamma == pytest.approx(ef21_gamma(2.0, 3.0, 1 / 4))  # alpha of C/(omega + 1) = 1/n
