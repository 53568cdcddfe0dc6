"""--spark-conf: given once or several times, with commas inside values, and the comma form of old pipelines."""

import json

import pytest

from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run
from ssvd_denoise.spark.conf import parse_conf


def conf_of(*values):
    return parse_conf(Settings.from_options(parser.parse_args([a for v in values for a in ("--spark-conf", v)]))
                      .spark_conf)


def test_repeated_values_may_hold_commas():
    given = ("spark.jars=a.jar,b.jar", "spark.driver.extraJavaOptions=-Da=1,-Db=2", "spark.executor.memory=4g")
    assert conf_of(*given) == {"spark.jars": "a.jar,b.jar", "spark.driver.extraJavaOptions": "-Da=1,-Db=2",
                               "spark.executor.memory": "4g"}


def test_the_comma_form_of_old_pipelines_still_gives_several_settings():
    assert conf_of("spark.executor.memory=3g, spark.executor.cores=2,") == {
        "spark.executor.memory": "3g", "spark.executor.cores": "2"}
    assert conf_of("spark.jars=a.jar,b.jar,spark.executor.cores=2") == {"spark.jars": "a.jar,b.jar",
                                                                        "spark.executor.cores": "2"}
    assert conf_of() == {} and conf_of("") == {}


def test_a_later_value_wins_and_the_report_keeps_every_value(series_input, tmp_path, started):
    inputdir, _ = series_input
    flags = ["--master", "local[1]", "--spark-conf", "spark.jars=a.jar,b.jar", "--spark-conf",
             "spark.executor.memory=1g,spark.executor.memory=2g"]
    assert run(Settings.from_options(parser.parse_args(flags)), inputdir, tmp_path / "out") == 1
    assert started["conf"] == {"spark.jars": "a.jar,b.jar", "spark.executor.memory": "2g"}
    parameters = json.loads((tmp_path / "out" / "ssvd_denoise.report.json").read_text())["parameters"]
    assert parameters["spark_conf"] == "spark.jars=a.jar,b.jar,spark.executor.memory=1g,spark.executor.memory=2g"
    # The Kubernetes settings in force, as when the environment gave the flags' defaults.
    assert parameters["executors"] == 2 and parameters["k8s_service_account"] == "spark"


@pytest.mark.parametrize("value", ["oops", "executor.memory=4g", "=4g", "spark.=4g"])
def test_a_value_that_does_not_start_with_a_setting_is_refused(capsys, value):
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--spark-conf", "spark.a=1", "--spark-conf", value])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"argument --spark-conf: expected spark.NAME=VALUE settings, got {value!r}")
