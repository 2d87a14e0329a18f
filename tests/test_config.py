"""Pipeline YAML loading: every problem reported at once, with its line, key path, value and what is valid.

Expected messages are written out by hand, so a change in wording is a deliberate change here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curate.config import (
    DownloadConfig,
    ParquetPoolConfig,
    PipelineConfig,
    apply_overrides,
    check_filter_expr,
    config_hash,
    dump_config,
    load_config,
)
from curate.errors import ConfigError

POOL = "pool: {source: datacomp, metadata: /data/metadata}\n"
MINIMAL = "name: demo\n" + POOL
TOP_KEYS = "name, run_dir, work_dir, pool, download, embed, strategies, reshard, train, evaluate, ray"
UNKNOWN_PROCESSES = "unknown key (did you mean 'processes'?); valid keys here: "
DOWNLOAD_KEYS = (
    "image_size, resize_mode, resize_only_if_bigger, encode_format, encode_quality, number_sample_per_shard, "
    "oom_shard_count, retries, timeout, url_deadline, compute_hash, extract_exif, blur_faces, "
    "disallowed_header_directives, user_agent_token, max_image_pixels, max_image_bytes, processes, threads, "
    "subset"
)
POOL_SOURCES = "'datacomp', 'parquet', 'openclipart'"


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, overrides: list[str] | None = None) -> list[str]:
    """The problem lines of a config that must not load; checks the header counts them."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    n = len(info.value.problems)
    assert info.value.message == f"{path}: {n} problem{'s' if n > 1 else ''}"
    return info.value.problems


def message_of(tmp_path: Path, text: str) -> str:
    """The one-line message of a file that cannot be read as a pipeline at all."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == []
    return info.value.message.removeprefix(f"{path}: ")


# ---------------------------------------------------------------- malformed files


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "downlaod: {processes: 4}\n") == [
        f"line 3: downlaod: unknown key (did you mean 'download'?); valid keys here: {TOP_KEYS}"
    ]


def test_unknown_nested_key_suggests_close_match(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "download:\n  procesess: 4\n") == [
        f"line 4: download.procesess: {UNKNOWN_PROCESSES}{DOWNLOAD_KEYS}"
    ]


def test_wrong_type(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "download:\n  image_size: big\n") == [
        "line 4: download.image_size: must be an integer (got 'big')"
    ]


def test_value_out_of_range(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "download:\n  image_size: 0\n") == [
        "line 4: download.image_size: must be >= 1 (got 0)"
    ]


def test_bad_enum_lists_valid_values(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "download:\n  resize_mode: squash\n") == [
        "line 4: download.resize_mode: must be one of 'no', 'border', 'keep_ratio', 'keep_ratio_largest' "
        "or 'center_crop' (got 'squash')"
    ]


def test_missing_required_pool(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "name: demo\n") == ["pool: required key is missing"]


def test_missing_pool_source(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "name: demo\npool:\n  metadata: /data\n") == [
        f"line 2: pool.source: required key is missing; valid: {POOL_SOURCES}"
    ]


def test_unknown_pool_source(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "name: demo\npool:\n  source: s3\n  metadata: /data\n") == [
        f"line 3: pool.source: must be one of {POOL_SOURCES} (got 's3')"
    ]


def test_unknown_pool_key_lists_that_sources_keys(tmp_path: Path) -> None:
    # 'metadata' belongs to the datacomp source; an openclipart pool must list its own keys.
    text = "name: demo\npool:\n  source: openclipart\n  metadata: /data\n"
    assert problems_of(tmp_path, text) == [
        "line 4: pool.metadata: unknown key for source 'openclipart'; "
        "valid keys here: max_samples, source, root, serve, caption, holdout"
    ]
    text = "name: demo\npool:\n  source: parquet\n  paths: [a.parquet]\n  url_column: link\n"
    assert problems_of(tmp_path, text) == [
        "line 5: pool.url_column: unknown key for source 'parquet' (did you mean 'url_col'?); "
        "valid keys here: max_samples, source, paths, url_col, text_col, uid_col"
    ]


def test_several_problems_reported_together_in_file_order(tmp_path: Path) -> None:
    text = "name: bad name\n" + POOL + "download:\n  procesess: 4\n  image_size: 0\n  blur_faces: maybe\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == f"{path}: 4 problems"
    assert info.value.problems == [
        "line 1: name: must be a letter or digit followed by letters, digits, '_', '.' or '-' "
        "(got 'bad name')",
        f"line 4: download.procesess: {UNKNOWN_PROCESSES}{DOWNLOAD_KEYS}",
        "line 5: download.image_size: must be >= 1 (got 0)",
        "line 6: download.blur_faces: must be true or false (got 'maybe')",
    ]
    assert str(info.value).count("\n  - ") == 4


def test_bad_strategy_expressions_each_reported(tmp_path: Path) -> None:
    text = MINIMAL + (
        "strategies:\n"
        "  empty: {all: []}\n"
        "  params: {foo: 3}\n"
        "  two_keys: {all: [clip_score], any: [image_based]}\n"
        "  nested:\n"
        "    not: {any: [clip_score, 7]}\n"
        "  ok: {all: [clip_score, {image_based: {scale: small}}]}\n"
    )
    assert problems_of(tmp_path, text) == [
        "line 4: strategies.empty.all: must be a non-empty list of filter expressions (got [])",
        "line 5: strategies.params.foo: filter parameters must be a mapping (got 3)",
        "line 6: strategies.two_keys: must hold exactly one key (all, any, not or a filter name); combine "
        "filters with {all: [...]} (got {'all': ['clip_score'], 'any': ['image_based']})",
        "line 8: strategies.nested.not.any.1: must be one of {all: [...]}, {any: [...]}, {not: ...}, "
        "a filter name or {filter_name: {params}} (got 7)",
    ]


def test_bad_strategy_name(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "strategies:\n  'my strategy': clip_score\n") == [
        "line 4: strategies.my strategy: strategy names may hold only letters, digits, '_' and '-' "
        "(got 'my strategy')"
    ]


def test_check_filter_expr_on_its_own() -> None:
    assert check_filter_expr({"all": [{"clip_score": {"fraction": 0.3}}, "image_based"]}) == []
    assert check_filter_expr({"any": "clip_score"}, "s") == [
        "s.any: must be a non-empty list of filter expressions (got 'clip_score')"
    ]


def test_duplicate_embed_model_names(tmp_path: Path) -> None:
    text = MINIMAL + (
        "embed:\n  models:\n"
        "    - {name: b32, arch: ViT-B-32, pretrained: openai}\n"
        "    - {name: l14, arch: ViT-L-14, pretrained: openai}\n"
        "    - {name: b32, arch: ViT-B-16, pretrained: openai}\n"
    )
    assert problems_of(tmp_path, text) == [
        "line 7: embed.models.2.name: model names must be unique; item 0 has this name too (got 'b32')"
    ]


def test_problems_in_list_items_name_the_item(tmp_path: Path) -> None:
    text = MINIMAL + (
        "embed:\n  models:\n    - {name: B32, arch: ViT-B-32}\n    - name: b16\n      archh: ViT-B-16\n"
    )
    assert problems_of(tmp_path, text) == [
        "line 5: embed.models.0.name: must be a lowercase letter followed by lowercase letters, "
        "digits or '_' (got 'B32')",
        "line 6: embed.models.1.arch: required key is missing",
        "line 7: embed.models.1.archh: unknown key (did you mean 'arch'?); "
        "valid keys here: name, arch, pretrained, model_config_file, from_pipeline",
    ]


def test_union_field_gives_one_message(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "evaluate:\n  tasks: some\n") == [
        "line 4: evaluate.tasks: must be 'all' or a list (got 'some')"
    ]
    assert problems_of(tmp_path, MINIMAL + "evaluate:\n  tasks: [imagenet1k, 3]\n") == [
        "line 4: evaluate.tasks.1: must be a string (got 3)"
    ]


def test_huge_value_is_cut_short(tmp_path: Path) -> None:
    text = MINIMAL + "download:\n  image_size: [" + ", ".join(map(str, range(500))) + "]\n"
    assert problems_of(tmp_path, text) == [
        "line 4: download.image_size: must be an integer "
        "(got [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16...)"
    ]


def test_empty_section_is_null_not_a_mapping(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL + "download:\n") == [
        "line 3: download: must be a mapping (got null)"
    ]


def test_repeated_key_is_not_silently_dropped(tmp_path: Path) -> None:
    text = MINIMAL + "download:\n  processes: 4\ndownload:\n  threads: 8\n  threads: 16\n"
    assert problems_of(tmp_path, text) == [
        "line 5: download: key appears twice (first on line 3)",
        "line 7: download.threads: key appears twice (first on line 6)",
    ]


def test_python_tag_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f'name: !!python/object/apply:os.system ["touch {marker}"]\n' + POOL
    assert message_of(tmp_path, text) == (
        "line 1: YAML tag '!!python/object/apply:os.system' is not allowed "
        "(a pipeline holds plain YAML values; tags are never executed)"
    )
    assert not marker.exists()


def test_invalid_yaml_syntax_gives_the_line(tmp_path: Path) -> None:
    text = "name: demo\npool:\n  source: datacomp\n   metadata: /data\n"
    assert message_of(tmp_path, text) == "line 4: invalid YAML: mapping values are not allowed here"


def test_empty_file(tmp_path: Path) -> None:
    assert message_of(tmp_path, "# nothing yet\n") == (
        "the file is empty; a pipeline needs at least 'name' and 'pool'"
    )


def test_top_level_list(tmp_path: Path) -> None:
    assert message_of(tmp_path, "- name: demo\n- pool: x\n") == (
        "the top level must be a mapping of keys like 'name:' (got [{'name': 'demo'}, {'pool': 'x'}])"
    )


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file$"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory, expected a pipeline YAML file$"):
        load_config(tmp_path)


# ---------------------------------------------------------------- overrides


def test_override_of_unknown_key_names_the_override(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL, ["download.procesess=4"]) == [
        f"override 'download.procesess=4': download.procesess: {UNKNOWN_PROCESSES}{DOWNLOAD_KEYS}"
    ]


def test_override_with_bad_index(tmp_path: Path) -> None:
    text = MINIMAL + "embed:\n  models:\n    - {name: b32, arch: ViT-B-32}\n"
    assert problems_of(tmp_path, text, ["embed.models.3.arch=ViT-B-16", "embed.models.x.arch=ViT-B-16"]) == [
        "override 'embed.models.3.arch=ViT-B-16': embed.models.3: no such item (embed.models has 1)",
        "override 'embed.models.x.arch=ViT-B-16': embed.models.x: no such item (embed.models has 1)",
    ]


def test_override_problems_come_with_the_files(tmp_path: Path) -> None:
    text = MINIMAL + "download:\n  image_size: 0\n"
    assert problems_of(tmp_path, text, ["download.threads=many", "name.first=x", "download"]) == [
        "line 4: download.image_size: must be >= 1 (got 0)",
        "override 'download.threads=many': download.threads: must be an integer (got 'many')",
        "override 'name.first=x': name.first: name holds no keys (got 'demo')",
        "override 'download': expected key.path=value, e.g. download.processes=4",
    ]


def test_override_value_with_python_tag_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    override = f'name=!!python/object/apply:os.system ["touch {marker}"]'
    assert problems_of(tmp_path, MINIMAL, [override]) == [
        f"override '{override}': value is not valid YAML: YAML tag '!!python/object/apply:os.system' is not "
        "allowed (a pipeline holds plain YAML values; tags are never executed)"
    ]
    assert not marker.exists()


def test_override_that_fixes_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "download:\n  image_size: 0\n")
    with pytest.raises(ConfigError):
        load_config(path)
    assert load_config(path, ["download.image_size=256"]).download.image_size == 256


def test_overrides_set_nested_values_and_list_items(tmp_path: Path) -> None:
    text = MINIMAL + "embed:\n  models:\n    - {name: b32, arch: ViT-B-16}\n"
    cfg = load_config(
        write(tmp_path, text),
        [
            "embed.models.0.arch=ViT-B-32",
            "download.processes=4",
            "download.compute_hash=null",
            "ray.address=auto",
            "train.scale=small",
            "strategies.top={all: [{clip_score: {model: b32, fraction: 0.3}}]}",
            "evaluate.tasks=[imagenet1k, cars]",
        ],
    )
    assert cfg.embed is not None and cfg.embed.models[0].arch == "ViT-B-32"
    assert cfg.download.processes == 4 and cfg.download.compute_hash is None
    assert cfg.ray.address == "auto"
    assert cfg.train is not None and cfg.train.scale == "small"
    assert cfg.strategies == {"top": {"all": [{"clip_score": {"model": "b32", "fraction": 0.3}}]}}
    assert cfg.evaluate is not None and cfg.evaluate.tasks == ["imagenet1k", "cars"]


def test_apply_overrides_on_raw_data() -> None:
    data = {"download": {"processes": 16}, "embed": {"models": [{"name": "a"}]}}
    assert apply_overrides(data, ["download.processes=2", "embed.models.0.name=b", "ray.num_cpus=3"]) == {
        "download": {"processes": 2},
        "embed": {"models": [{"name": "b"}]},
        "ray": {"num_cpus": 3},
    }
    with pytest.raises(ConfigError) as info:
        apply_overrides(data, ["embed.models.1.name=c", "nokey"])
    assert info.value.message == "2 bad overrides"
    assert info.value.problems == [
        "override 'embed.models.1.name=c': embed.models.1: no such item (embed.models has 1)",
        "override 'nokey': expected key.path=value, e.g. download.processes=4",
    ]


# ---------------------------------------------------------------- valid configs


def test_minimal_config_and_datacomp_download_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.name == "demo"
    assert cfg.pool.source == "datacomp" and cfg.pool.metadata == "/data/metadata"
    assert cfg.resolved_run_dir() == Path("runs/demo")
    assert cfg.embed is None and cfg.train is None and cfg.evaluate is None and cfg.strategies == {}
    d = cfg.download  # reference §1.5: download_upstream.py's call plus img2dataset's defaults
    assert (d.image_size, d.resize_mode, d.resize_only_if_bigger) == (512, "keep_ratio_largest", True)
    assert (d.encode_format, d.encode_quality, d.number_sample_per_shard) == ("jpg", 95, 10_000)
    assert (d.oom_shard_count, d.processes, d.threads, d.retries, d.timeout) == (8, 16, 128, 2, 10.0)
    assert (d.compute_hash, d.extract_exif) == ("sha256", True)
    assert d.disallowed_header_directives == ["noai", "noimageai", "noindex", "noimageindex"]


def test_parquet_pool(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "name: byod\npool: {source: parquet, paths: [/d/a.parquet]}\n"))
    assert isinstance(cfg.pool, ParquetPoolConfig)
    assert (cfg.pool.paths, cfg.pool.url_col, cfg.pool.text_col) == (["/d/a.parquet"], "url", "text")


def test_config_hash_ignores_exec_only_fields() -> None:
    base = DownloadConfig()
    assert config_hash(base) == config_hash(DownloadConfig(processes=2, threads=8))
    assert config_hash(base) != config_hash(DownloadConfig(image_size=256))
    pool = {"source": "datacomp", "metadata": "/m"}
    a = PipelineConfig.model_validate({"name": "a", "pool": pool})
    b = PipelineConfig.model_validate({"name": "a", "pool": pool, "download": {"processes": 1}})
    c = PipelineConfig.model_validate({"name": "a", "pool": pool, "download": {"image_size": 64}})
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_dump_config_round_trip(tmp_path: Path) -> None:
    text = MINIMAL + (
        "download: {image_size: 256, processes: 2}\n"
        "embed:\n  models:\n    - {name: b32, arch: ViT-B-32, pretrained: openai}\n"
        "strategies:\n  top: {all: [{clip_score: {model: b32, fraction: 0.3}}]}\n"
        "train: {scale: small}\nevaluate: {tasks: [imagenet1k]}\n"
    )
    cfg = load_config(write(tmp_path, text))
    dumped = dump_config(cfg)
    assert PipelineConfig.model_validate(yaml.safe_load(dumped)) == cfg
    assert load_config(write(tmp_path, dumped, "dumped.yaml")) == cfg


def test_shipped_pipelines_are_valid() -> None:
    for path in sorted(Path(__file__).parents[1].joinpath("pipelines").glob("*.yaml")):
        load_config(path)


def test_decode_worker_counts_are_auto_or_a_count(tmp_path: Path) -> None:
    text = MINIMAL + "embed:\n  models:\n    - {name: b32, arch: ViT-B-32}\n  cpu_decode_workers: -2\n"
    text += "  gpu_decode_workers: many\n"
    assert problems_of(tmp_path, text) == [
        "line 6: embed.cpu_decode_workers: must be >= 0 or 'auto' (got -2)",
        "line 7: embed.gpu_decode_workers: must be an integer or 'auto' (got 'many')",
    ]
    cfg = load_config(write(tmp_path, MINIMAL + "embed:\n  models:\n    - {name: b32, arch: ViT-B-32}\n"))
    assert (
        cfg.embed is not None
        and (cfg.embed.cpu_decode_workers, cfg.embed.gpu_decode_workers) == ("auto",) * 2
    )
