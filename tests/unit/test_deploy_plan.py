"""Deploy's planning logic: facts in, decisions out (no SSH here; the lab proves the rest)."""

from __future__ import annotations

import json

import pytest

from tasks import commands, layout, pki, signing, users, wanted
from tasks.errors import RemoteError, StateError
from tasks.inventory import Inventory
from tasks.plans import deploy as planner
from tasks.plans import deploy_facts, deploy_steps, preflight
from tasks.plans.deploy import DeployPlan
from tasks.plans.deploy_facts import Container, DeployFacts
from tasks.remote.upload import Upload
from tasks.wanted import RunSpec

FACTS_OUTPUT = "\n".join(
    [
        "os\tdebian",
        "apt\tyes",
        "docker\t20.10.24+dfsg1",
        "disk_free_kb\t5242880",
        "port_holder\t",
        "net:regkit\tfalse <no value>",
        "net:regkit-backend\ttrue true",
        "forwarding\t1 -P FORWARD DROP",
        "file:/etc/regkit/ca.crt\tabc123 644 0 0",
        "ctr:regkit-registry\tsha256:img1|spec1|true",
        "ctr:regkit-nginx\tsha256:img2|<no value>|false",
        "img:registry:2.8.3\tsha256:img1",
    ]
)


def test_parse_facts() -> None:
    f = deploy_facts.parse_facts(FACTS_OUTPUT)
    assert (f.os, f.apt, f.apache2_utils) == ("debian", True, False)
    assert f.networks == {"regkit": "false <no value>", "regkit-backend": "true true"}
    assert f.forwarding == "1 -P FORWARD DROP"
    assert f.docker == "20.10.24+dfsg1"
    assert f.disk_free_kb == 5242880
    assert f.files == {"/etc/regkit/ca.crt": "abc123 644 0 0"}
    assert f.containers["regkit-registry"] == Container("sha256:img1", "spec1", True)
    assert f.containers["regkit-nginx"].spec == ""
    assert not f.containers["regkit-nginx"].running
    assert f.images == {"registry:2.8.3": "sha256:img1"}


SPEC = RunSpec("regkit-registry", "registry:2.8.3", ("--network", "regkit"))


@pytest.mark.parametrize(
    ("current", "image_id", "expected"),
    [
        (None, "sha256:a", "created"),
        (Container("sha256:a", "other", True), "sha256:a", "recreated: its configuration"),
        (Container("sha256:a", SPEC.digest, True), "sha256:b", "recreated: its image"),
        (Container("sha256:a", SPEC.digest, True), "", "recreated: its image"),
        (Container("sha256:a", SPEC.digest, False), "sha256:a", "started"),
        (Container("sha256:a", SPEC.digest, True), "sha256:a", ""),
    ],
)
def test_container_change(current: Container | None, image_id: str, expected: str) -> None:
    why = planner.container_change(current, SPEC, image_id)
    assert why.startswith(expected) if expected else why == ""


def test_run_spec_digest_follows_every_argument() -> None:
    other = RunSpec(SPEC.name, SPEC.image, ("--network", "other"))
    assert SPEC.digest != other.digest
    assert SPEC.digest == RunSpec(SPEC.name, SPEC.image, ("--network", "regkit")).digest
    assert f"--label regkit.spec={SPEC.digest}" in commands.docker_start(SPEC)
    joined = RunSpec(SPEC.name, SPEC.image, SPEC.args, more_networks=("regkit-backend",))
    assert joined.digest != SPEC.digest


def test_the_registry_is_only_on_the_internal_network(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    reg = wanted.registry_spec(pki_inv, "0" * 64)
    nginx = wanted.nginx_spec(pki_inv, "regkit-nginx:x")
    assert reg.args[reg.args.index("--network") + 1] == "regkit-backend"
    assert reg.args.count("--network") == 1 and not reg.more_networks
    assert "-p" not in reg.args
    assert nginx.more_networks == ("regkit-backend",)
    assert layout.BACKEND_OPTIONS == (
        "--internal",
        "-o",
        "com.docker.network.bridge.inhibit_ipv4=true",
    )


@pytest.mark.parametrize(
    ("forwarding", "warns"),
    [
        ("1 -P FORWARD ACCEPT", True),
        ("1 -P FORWARD DROP", False),
        ("0 -P FORWARD ACCEPT", False),
        ("1 ", False),
        ("", False),
    ],
)
def test_a_host_that_forwards_into_containers_is_warned_of(forwarding: str, warns: bool) -> None:
    assert bool(preflight.forwarding_warning(DeployFacts(forwarding=forwarding))) is warns


def test_a_backend_network_that_is_not_internal_stops_the_deploy() -> None:
    facts = DeployFacts(docker="20.10", disk_free_kb=2 * layout.MIN_FREE_KB)
    inv = Inventory.model_validate({"registry": {"domain": "r.unit.test"}})
    assert preflight.preflight(inv, "regbox", facts)
    facts.networks["regkit-backend"] = "false <no value>"
    with pytest.raises(RemoteError, match="regkit-backend exists but is not internal"):
        preflight.preflight(inv, "regbox", facts)


def test_wanted_files_modes_and_no_ca_key(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    users.ensure_probe_credential(pki_inv)
    files = {f.path: f for f in wanted.registry_files(pki_inv)}
    assert files["/etc/regkit/tls/server.key"].mode == 0o600
    configs = [f for path, f in files.items() if path.endswith("/config.yml")]
    configs = [f for f in configs if f.path.startswith("/etc/regkit/registry/")]
    assert [f.path for f in configs] == [
        f"{layout.config_dir(f.digest)}/config.yml" for f in configs
    ]
    assert [f.mode for f in configs] == [0o600, 0o600]
    # Each staged config has the token certificate it trusts beside it.
    token_cert = signing.cert_path(pki_inv).read_bytes()
    for config in configs:
        beside = files[f"{layout.config_dir(config.digest)}/token.crt"]
        assert beside.content == token_cert
        assert signing.fingerprint(pki_inv).encode() in config.content
    key = files["/etc/regkit/token/token.key"]
    assert (key.mode, key.uid, key.gid) == (0o600, 4431, 4431)
    rights_doc = files["/etc/regkit/rights/rights.json"]
    assert (rights_doc.mode, rights_doc.uid, rights_doc.gid) == (0o640, 0, 4431)
    assert json.loads(rights_doc.content)["users"] == {
        "alice": {"role": "push", "repos": ["*"]},
        "regkit-probe": {"role": "admin", "repos": ["*"]},
    }
    auth = files["/etc/regkit/auth/htpasswd"]
    assert (auth.mode, auth.uid, auth.gid) == (0o640, 0, 4430)
    # The token service checks passwords: it joins the file's group. An nginx from before
    # it (its workers' gid is 4430) still reads the file during an upgrade or a rollback.
    token = wanted.token_spec("regkit-token:x")
    assert ("--group-add", "4430") in zip(token.args, token.args[1:], strict=False)
    assert any(arg.startswith("/etc/regkit/auth:") for arg in token.args)
    assert not any("/etc/regkit/auth" in arg for arg in wanted.nginx_mounts())
    assert auth.content.count(b"\n") == 2
    assert auth.content.startswith(b"alice:$2y$")
    assert b"\nregkit-probe:$2y$" in auth.content
    assert "/etc/docker/certs.d/registry.unit.test/ca.crt" in files
    ca_key = pki.paths(pki_inv).ca_key.read_bytes()
    assert all(f.content != ca_key for f in files.values())
    keys = ("/etc/regkit/tls/server.key", "/etc/regkit/token/token.key")
    assert all(b"PRIVATE KEY" not in f.content for p, f in files.items() if p not in keys)


def test_deploy_needs_a_user_first(pki_inv: Inventory) -> None:
    with pytest.raises(users.UsersError, match="no users yet; add one first"):
        wanted.registry_files(pki_inv)


def test_files_that_match_are_left_alone(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    users.ensure_probe_credential(pki_inv)
    files = wanted.registry_files(pki_inv)
    facts = deployed(pki_inv, files)
    assert planner.plan(pki_inv, "regbox", files, facts).files == ()
    key = next(f for f in files if f.path.endswith("server.key"))
    facts.files[key.path] = f"{key.digest} 644 0 0"
    changes = planner.plan(pki_inv, "regbox", files, facts).files
    assert [(c.upload, c.why) for c in changes] == [(key, "content or mode differs")]


def test_nginx_tag_follows_the_build_context_only(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    users.ensure_probe_credential(pki_inv)
    before = wanted.nginx_tag(wanted.registry_files(pki_inv))
    users.set_password(pki_inv, "bob", "correct horse battery")
    assert wanted.nginx_tag(wanted.registry_files(pki_inv)) == before
    assert before.startswith("regkit-nginx:")


def test_stable_probe_credential(inv: Inventory) -> None:
    with pytest.raises(StateError, match="no deploy login here yet; run 'fab deploy' first"):
        users.probe_credential(inv)
    assert not (inv.state_path / "probe-password").exists()
    users.ensure_probe_credential(inv)
    first = users.probe_credential(inv)
    users.ensure_probe_credential(inv)
    assert first == users.probe_credential(inv)
    assert first[1].startswith("regkit-probe:$2y$05$")
    assert len(first[0]) >= 43
    assert users.load_empty(inv).from_string(first[1]).check_password(users.PROBE_USER, first[0])


def test_preflight_refuses_a_busy_port(inv: Inventory) -> None:
    facts = DeployFacts(
        docker="27.0",
        disk_free_kb=10**8,
        port_holder='LISTEN 0 511 *:443 users:(("apache2",pid=1))',
    )
    with pytest.raises(RemoteError, match=r"port 443 is already in use .*apache2"):
        preflight.preflight(inv, "regbox", facts)


def deployed(inv: Inventory, files: list[Upload]) -> DeployFacts:
    """The facts of a host where ``files`` were deployed and nothing changed since."""
    tag = wanted.nginx_tag(files)
    config, readonly = wanted.registry_configs(files)
    registry = wanted.registry_spec(inv, config.digest)
    nginx = wanted.nginx_spec(inv, tag)
    tokend = wanted.token_spec(wanted.token_tag(files))
    image = inv.registry.images.registry
    return DeployFacts(
        os="debian",
        apt=True,
        apache2_utils=True,
        docker="20.10.24",
        disk_free_kb=10 * layout.MIN_FREE_KB,
        port_holder='LISTEN 0 4096 0.0.0.0:443 users:(("docker-proxy",pid=9))',
        files={f.path: f.fact for f in files},
        containers={
            "regkit-registry": Container("sha256:reg", registry.digest, True),
            "regkit-nginx": Container("sha256:ngx", nginx.digest, True),
            "regkit-token": Container("sha256:tok", tokend.digest, True),
        },
        images={
            image: "sha256:reg",
            inv.registry.images.nginx: "sha256:ngxbase",
            inv.registry.images.token: "sha256:pybase",
            tag: "sha256:ngx",
            tokend.image: "sha256:tok",
        },
        networks={"regkit": "false <no value>", "regkit-backend": "true true"},
        deployed={
            "registry": image,
            "nginx": tag,
            "config": config.digest[:16],
            "readonly_config": readonly.digest[:16],
            "passwords": "token-service",
        },
        configs=(config.digest[:16], readonly.digest[:16]),
        self_name=preflight.self_name_line(inv),
    )


@pytest.fixture
def files(pki_inv: Inventory) -> list[Upload]:
    users.set_password(pki_inv, "alice", "correct horse battery")
    users.ensure_probe_credential(pki_inv)
    return wanted.registry_files(pki_inv)


def summary(inv: Inventory, plan: DeployPlan) -> list[tuple[str, str]]:
    """(subject, why) of every step that changes something."""
    lines = []
    for step in deploy_steps.steps(inv, plan):
        lines += [(s, w) for s, w in (step.details or ((step.subject, step.why),)) if w]
    return lines


def test_nothing_changed_plans_nothing_and_only_reads_the_probe_back(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    plan = planner.plan(pki_inv, "regbox", files, deployed(pki_inv, files))
    assert not plan.changes
    assert summary(pki_inv, plan) == []
    proof = deploy_steps.steps(pki_inv, plan)[-1]
    assert (proof.subject, proof.kind) == ("verify", "check")
    assert "read back" in proof.command and "docker push" in proof.command
    assert "regkit/probe:deploy-regbox" in proof.command
    full = deploy_steps.verify_script(pki_inv, "deploy-regbox", full=True)
    assert "read back" not in full and "docker push" in full


def test_a_fresh_host_gets_everything_in_order(pki_inv: Inventory, files: list[Upload]) -> None:
    facts = deploy_facts.parse_facts(
        "os\tdebian\napt\tyes\ndocker\t20.10.24\ndisk_free_kb\t9999999\nport_holder\t"
    )
    plan = planner.plan(pki_inv, "regbox", files, facts)
    tag = wanted.nginx_tag(files)
    images = pki_inv.registry.images
    assert summary(pki_inv, plan)[:4] == [
        ("image registry:2.8.3", "pulled"),
        (f"image {images.nginx}", "pulled"),
        (f"image {images.token}", "pulled"),
        ("apache2-utils", "installed with apt"),
    ]
    assert [s for s, _ in summary(pki_inv, plan)][4:] == [
        *(f"file {f.path}" for f in files),
        f"image {tag}",
        f"image {wanted.token_tag(files)}",
        "network regkit",
        "network regkit-backend",
        "container regkit-token",
        "container regkit-registry",
        "container regkit-nginx",
        "name registry.unit.test",
        "deploy record",
    ]
    assert plan.test_nginx and plan.reload == ()
    config, readonly = wanted.registry_configs(files)
    assert plan.record == {
        "registry": "registry:2.8.3",
        "nginx": tag,
        "config": config.digest[:16],
        "readonly_config": readonly.digest[:16],
        "passwords": "token-service",
        "previous": None,
    }
    kinds = [step.kind for step in deploy_steps.steps(pki_inv, plan)]
    files_step = kinds.index("upload")
    assert kinds.index("build") < kinds.index("check") < kinds.index("upload", files_step + 1)


def test_a_plan_says_which_containers_it_recreates(pki_inv: Inventory, files: list[Upload]) -> None:
    facts = deployed(pki_inv, files)
    assert planner.recreated(planner.plan(pki_inv, "regbox", files, facts)) == []
    facts.containers.pop("regkit-nginx")
    facts.containers["regkit-token"] = Container("sha256:old", "", True)
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert planner.recreated(plan) == ["regkit-token", "regkit-nginx"]


def test_the_host_names_itself_in_etc_hosts_once(pki_inv: Inventory, files: list[Upload]) -> None:
    facts = deployed(pki_inv, files)
    facts.self_name = "10.0.0.9 registry.unit.test # regkit: this host serves the registry itself"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    line = "127.0.0.1 registry.unit.test # regkit: this host serves the registry itself"
    assert plan.self_name == line and plan.changes
    why = "127.0.0.1 in /etc/hosts: this host's proof and pulls reach its own proxy"
    assert summary(pki_inv, plan) == [("name registry.unit.test", why)]
    assert deploy_facts.parse_facts(f"self_name\t{line}\n").self_name == line


def test_a_new_certificate_is_uploaded_and_reloaded_without_a_restart(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    facts.files["/etc/regkit/tls/server.crt"] = "old 644 0 0"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert summary(pki_inv, plan) == [
        ("file /etc/regkit/tls/server.crt", "content or mode differs"),
        ("nginx reload", "certificate changed"),
    ]
    assert not plan.registry.why and not plan.nginx.why and not plan.test_nginx


def test_a_new_password_file_needs_no_reload(pki_inv: Inventory, files: list[Upload]) -> None:
    facts = deployed(pki_inv, files)
    facts.files["/etc/regkit/auth/htpasswd"] = "old 640 0 4430"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert summary(pki_inv, plan) == [("file /etc/regkit/auth/htpasswd", "content or mode differs")]
    assert plan.changes and plan.reload == ()


def test_a_maintenance_flag_left_up_is_lowered_before_the_proof_pushes(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    """A gc (or a migration) that did not finish left nginx's flag up (pushes refused
    "while garbage is collected"): the next deploy lowers it, before its proof pushes."""
    facts = deployed(pki_inv, files)
    facts.files["/etc/regkit/maintenance/gc"] = "e3b0c442 644 0 0"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert plan.changes and plan.clear_flags == ("/etc/regkit/maintenance/gc",)
    steps = deploy_steps.steps(pki_inv, plan)
    subjects = [step.subject for step in steps]
    assert subjects.index("maintenance flag") < subjects.index("verify")
    lower = steps[subjects.index("maintenance flag")].command
    assert lower == "rm -f /etc/regkit/maintenance/gc"
    assert not planner.plan(pki_inv, "regbox", files, deployed(pki_inv, files)).clear_flags


def test_an_upgrade_pulls_recreates_the_registry_and_reloads_nginx(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    del facts.images["registry:2.8.3"]
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert summary(pki_inv, plan) == [
        ("image registry:2.8.3", "pulled"),
        ("container regkit-registry", "recreated: its image changed"),
        ("nginx reload", "registry recreated"),
    ]


def test_with_ship_images_only_the_missing_image_is_shipped_first(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    del facts.images["registry:2.8.3"]
    plan = planner.plan(pki_inv, "regbox", files, facts, ship=True)
    assert (plan.pull, plan.ship) == ((), ("registry:2.8.3",))
    first = deploy_steps.steps(pki_inv, plan)[0]
    assert (first.subject, first.kind, first.command) == (
        "image registry:2.8.3",
        "ship",
        "registry:2.8.3",
    )
    del facts.images[pki_inv.registry.images.nginx]
    assert planner.plan(pki_inv, "regbox", files, facts, ship=True).ship == ("registry:2.8.3",)


def test_a_base_image_is_needed_only_for_a_build(pki_inv: Inventory, files: list[Upload]) -> None:
    facts = deployed(pki_inv, files)
    nginx = pki_inv.registry.images.nginx
    del facts.images[nginx], facts.images[wanted.nginx_tag(files)]
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert plan.pull == (nginx,) and plan.build == wanted.nginx_tag(files)


def test_a_pull_that_fails_names_the_image_and_the_flag(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    del facts.images["registry:2.8.3"]
    pull = deploy_steps.steps(pki_inv, planner.plan(pki_inv, "regbox", files, facts))[0]
    assert pull.command == "docker pull -q registry:2.8.3 >/dev/null"
    assert pull.failure == (
        "image registry:2.8.3 is not on the host, and pulling it failed; if the host cannot "
        "reach its registry, deploy with --ship-images to carry it over SSH (from this "
        "machine's Docker, or --images-from HOST)"
    )


def test_an_image_pinned_by_digest_cannot_be_shipped(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    digest = "registry@sha256:" + "a" * 64
    images = pki_inv.registry.images.model_copy(update={"registry": digest})
    pinned = pki_inv.model_copy(
        update={"registry": pki_inv.registry.model_copy(update={"images": images})}
    )
    facts = deployed(pki_inv, files)
    with pytest.raises(RemoteError, match="pinned by digest, and docker load restores tags"):
        planner.plan(pinned, "regbox", files, facts, ship=True)
    assert planner.plan(pinned, "regbox", files, facts).pull == (digest,)


def test_a_new_build_context_rebuilds_tests_and_recreates_the_proxy(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    conf = next(f for f in files if f.path == "/etc/regkit/nginx/nginx.conf")
    changed = [Upload(f.path, f.content + b"# new\n", f.mode) if f is conf else f for f in files]
    plan = planner.plan(pki_inv, "regbox", changed, facts)
    tag = wanted.nginx_tag(changed)
    assert summary(pki_inv, plan) == [
        ("file /etc/regkit/nginx/nginx.conf", "content or mode differs"),
        (f"image {tag}", "built"),
        ("container regkit-nginx", "recreated: its configuration changed"),
        ("deploy record", "/etc/regkit/deployed.json (rollback returns to the previous images)"),
    ]
    assert plan.test_nginx
    assert plan.record is not None and plan.record["previous"]["nginx"] == wanted.nginx_tag(files)


def test_the_plan_digest_follows_the_facts(pki_inv: Inventory, files: list[Upload]) -> None:
    same = [planner.plan(pki_inv, "regbox", files, deployed(pki_inv, files)) for _ in range(2)]
    assert same[0].digest == same[1].digest
    facts = deployed(pki_inv, files)
    facts.containers["regkit-nginx"] = Container("sha256:ngx", "other", True)
    assert planner.plan(pki_inv, "regbox", files, facts).digest != same[0].digest


def test_configs_are_staged_by_digest_and_old_ones_pruned(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    """A new registry config goes to a folder of its own; after the deploy, the folders
    of what runs and what ran before stay, and everything else goes."""
    facts = deployed(pki_inv, files)
    old = dict(facts.deployed)
    config, _ = wanted.registry_configs(files)
    cert = signing.cert_path(pki_inv).read_bytes()
    changed = [f for f in files if not f.path.startswith(layout.config_dir(config.digest))]
    changed += wanted.staged_config(config.content + b"# new\n", cert)
    facts.configs = (*facts.configs, "0123456789abcdef", "config.yml")
    facts.legacy = ("/etc/regkit/registry/config.yml", "/etc/regkit/registry-readonly")
    plan = planner.plan(pki_inv, "regbox", changed, facts)
    new_config, _ = wanted.registry_configs(changed)
    assert plan.registry.why == "recreated: its configuration changed"
    assert plan.reload == ("registry recreated",)
    assert plan.record is not None
    assert plan.record["previous"] == {k: old[k] for k in planner.RECORD_KEYS}
    assert plan.record["config"] == new_config.digest[:16] != old["config"]
    assert plan.prune == (
        "/etc/regkit/registry/0123456789abcdef",
        "/etc/regkit/registry/config.yml",
        "/etc/regkit/registry-readonly",
    )
    steps = deploy_steps.steps(pki_inv, plan)
    assert steps[-1].command == (
        "rm -rf /etc/regkit/registry/0123456789abcdef /etc/regkit/registry/config.yml "
        "/etc/regkit/registry-readonly"
    )
    assert [s.subject for s in steps][-3:] == ["verify", "deploy record", "old configs"]


def test_the_first_deploy_after_the_upgrade_stages_the_old_configs_for_rollback(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    """A host deployed before configs were staged: its record has no config, and the
    configs sit at the old paths. They are staged by digest and named in the record's
    previous deploy (so rollback can return to them), then the old paths go."""
    facts = deployed(pki_inv, files)
    facts.deployed = {"registry": "registry:2.8.2", "nginx": "regkit-nginx:old"}
    facts.configs = ("config.yml",)
    facts.legacy = ("/etc/regkit/registry/config.yml", "/etc/regkit/registry-readonly")
    facts.files["/etc/regkit/registry/config.yml"] = f"{'1' * 64} 600 0 0"
    facts.files["/etc/regkit/registry-readonly/config.yml"] = f"{'2' * 64} 600 0 0"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert plan.stage == (
        ("/etc/regkit/registry/config.yml", "1" * 16),
        ("/etc/regkit/registry-readonly/config.yml", "2" * 16),
    )
    assert plan.record is not None and plan.record["previous"] == {
        "registry": "registry:2.8.2",
        "nginx": "regkit-nginx:old",
        "config": "1" * 16,
        "readonly_config": "2" * 16,
        "passwords": None,  # its nginx checked them
    }
    assert plan.prune == ("/etc/regkit/registry/config.yml", "/etc/regkit/registry-readonly")
    subjects = [step.subject for step in deploy_steps.steps(pki_inv, plan)]
    assert subjects.index("legacy registry configs") < subjects.index("old configs")


def test_an_upgrade_that_changes_nothing_still_records_the_staged_configs(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    """The old version deployed the same images and config: the record gains the
    configs' names (else rollback could never use them), and keeps the old deploy as
    the previous one: its nginx checked passwords itself (rollback refuses to go back
    to it, and says so)."""
    facts = deployed(pki_inv, files)
    config, readonly = wanted.registry_configs(files)
    facts.deployed = {"registry": "registry:2.8.3", "nginx": wanted.nginx_tag(files)}
    facts.legacy = ("/etc/regkit/registry/config.yml", "/etc/regkit/registry-readonly")
    facts.files["/etc/regkit/registry/config.yml"] = f"{config.digest} 600 0 0"
    facts.files["/etc/regkit/registry-readonly/config.yml"] = f"{readonly.digest} 600 0 0"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    assert plan.record == {
        "registry": "registry:2.8.3",
        "nginx": wanted.nginx_tag(files),
        "config": config.digest[:16],
        "readonly_config": readonly.digest[:16],
        "passwords": "token-service",
        "previous": {
            "registry": "registry:2.8.3",
            "nginx": wanted.nginx_tag(files),
            "config": config.digest[:16],
            "readonly_config": readonly.digest[:16],
            "passwords": None,
        },
    }
    assert plan.stage == ()
    assert plan.prune == ("/etc/regkit/registry/config.yml", "/etc/regkit/registry-readonly")


def test_a_new_token_service_is_built_and_swapped_and_nginx_looks_it_up_again(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    source = next(f for f in files if f.path == "/etc/regkit/token-image/service.py")
    changed = [Upload(f.path, f.content + b"# new\n") if f is source else f for f in files]
    plan = planner.plan(pki_inv, "regbox", changed, facts)
    tag = wanted.token_tag(changed)
    assert summary(pki_inv, plan) == [
        ("file /etc/regkit/token-image/service.py", "content or mode differs"),
        (f"image {tag}", "built"),
        ("container regkit-token", "recreated: its configuration changed"),
        ("nginx reload", "token service recreated"),
    ]
    assert not plan.registry.why and not plan.nginx.why


def test_another_hosts_line_for_the_domain_is_warned_about(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    facts.other_name = "203.0.113.7 registry.unit.test"
    warnings = planner.plan(pki_inv, "regbox", files, facts).warnings
    assert warnings == (
        "/etc/hosts has another line for registry.unit.test ('203.0.113.7 registry.unit.test'); "
        "regkit's own line comes first, so this host reaches its own proxy, but remove the "
        "other if it is stale",
    )


def test_the_hosts_own_line_is_written_again_when_another_comes_first(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    facts.other_name = facts.first_name = "203.0.113.7 registry.unit.test"
    assert planner.plan(pki_inv, "regbox", files, facts).self_name == facts.self_name
    facts.first_name = facts.self_name
    assert planner.plan(pki_inv, "regbox", files, facts).self_name == ""


def test_apt_that_cannot_reach_its_source_skips_the_package_and_says_so(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deployed(pki_inv, files)
    facts.apache2_utils, facts.apt_source = False, "no http://deb.debian.org/debian"
    plan = planner.plan(pki_inv, "regbox", files, facts)
    step = next(s for s in deploy_steps.steps(pki_inv, plan) if s.subject == "apache2-utils")
    assert step.skipped and step.why.startswith(
        "apt cannot reach its source (http://deb.debian.org/debian); not installed. Nothing "
        "regkit runs needs it"
    )
    assert not plan.changes
    facts.apt_source = "yes"
    assert planner.plan(pki_inv, "regbox", files, facts).package == "install"


def test_the_facts_script_s_lines_for_the_hosts_file_and_apt_are_read() -> None:
    facts = deploy_facts.parse_facts(
        "apt\tyes\napt_source\tno http://203.0.113.1/debian/dists/bookworm/Release\n"
        "first_name\t203.0.113.7 registry.unit.test\nother_name\t203.0.113.7 registry.unit.test"
    )
    assert facts.apt_source == "no http://203.0.113.1/debian/dists/bookworm/Release"
    assert facts.first_name == facts.other_name == "203.0.113.7 registry.unit.test"
    assert preflight.package_state(facts).startswith("unreachable http://203.0.113.1/")
