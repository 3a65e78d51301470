"""resolve_device and --device: auto, cpu, cuda; an explicit cuda without CUDA is one line, never a traceback."""

import pytest
import torch

import hookedmlp.devices as devices
from hookedmlp import ConfigError, DeviceError
from hookedmlp.devices import resolve_device
from hookedmlp_cli.commands import main

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_auto_is_cuda_where_there_is_one_else_the_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cpu:0", "cuda:x", "cuda:", "", 3])
def test_a_device_that_is_none_of_them_is_refused(spec):
    with pytest.raises(ConfigError) as e:
        resolve_device(spec)
    assert str(e.value) == f"device must be one of auto, cpu, cuda (or cuda:N), got {spec!r}"


@no_cuda
def test_cuda_without_cuda_says_why_in_one_line(monkeypatch):
    for built, why in [("13.0", "no CUDA device is visible"), (None, "this torch is built without CUDA")]:
        monkeypatch.setattr(devices.torch.version, "cuda", built)
        with pytest.raises(DeviceError) as e:
            resolve_device("cuda:1")
        assert str(e.value) == (
            f"device 'cuda:1' asked for, but {why} (torch {torch.__version__}); use --device cpu, or auto to take "
            "CUDA only where there is one"
        )
        assert isinstance(e.value, RuntimeError)


@no_cuda
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "1", "--out", "{tmp}/m.pt"],
        ["grid", "--json", "{tmp}/g.json"],
        ["sweep", "--json", "{tmp}/s.json"],
        ["study", "--quick", "--out", "{tmp}/out", "--cache", "{tmp}/cache"],
        ["reproduce", "--quick", "--out", "{tmp}/out"],
    ],
)
def test_each_command_refuses_cuda_without_cuda_in_one_line_before_it_computes(capsys, tmp_path, argv):
    assert main([a.format(tmp=tmp_path) for a in argv] + ["--device", "cuda"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"hookedmlp {argv[0]}: error: device 'cuda' asked for, but ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--device", "gpu", "argument --device: expected one of auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("--threads", "0", "argument --threads: expected a positive integer, got 0"),
        ("--threads", "many", "argument --threads: expected a positive integer, got 'many'"),
    ],
)
def test_the_parser_refuses_a_bad_device_or_thread_count(capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        main(["grid", flag, value])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
