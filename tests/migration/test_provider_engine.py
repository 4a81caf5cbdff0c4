"""ObjectMigration's provider started and driven the way ``pulumi up`` does it, against fake-gcs-server and Azurite.

* The ``__provider`` string and the inputs come from the real azure-target program (under mocks),
  serialized by the SDK itself.
* The provider process is started by Pulumi's own launcher script (``pulumi-resource-pulumi-python``,
  vendored unchanged in ``fixtures/``), with the engine's rule: working directory = the project's
  ``main`` directory, ``PULUMI_RUNTIME_VIRTUALENV`` exactly as ``Pulumi.yaml`` writes it, the engine's
  address as the only argument. No ``PYTHONPATH``: the venv alone must make the code importable.
* A fake engine on loopback serves the ``pulumirpc.Engine`` service (``Log`` records what the user would see).
* Every call goes through the SDK's generated gRPC stubs with Struct-encoded properties; the credential
  is sent wrapped as a secret, as an engine that accepted secrets would send it.

The transcript (each call and the essential fields of its answer, and the engine log) is written to
``tmp_path`` and, when ``SPOTSHIFT_ENGINE_TRANSCRIPT`` names a file, there too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pulumi
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2, provider_pb2_grpc

from app.storage.emulators import Azurite, FakeGcsServer, environment
from migration.resource import DEFAULT_EXCLUDE
from stacks import azure_target
from tests.infra import pulumi_mocks
from tests.migration.conftest import REPO_ROOT
from tests.migration.stalling_proxy import StallingProxy

LAUNCHER = Path(__file__).parent / "fixtures" / "pulumi-resource-pulumi-python"
DYNAMIC = "pulumi-python:dynamic/spotshift:MigrationRun"
SOURCE_STACK = "acme/spotshift/gcp-source"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKeyForTestsOnly spotshift@test"
OBJECTS = {f"uploads/{i:04d}.bin": bytes([i % 251]) * (1000 + 97 * i) for i in range(40)}
OBJECTS["jobs/0001.json"] = b'{"status": "queued"}'


class FakeEngine(engine_pb2_grpc.EngineServicer):
    """The engine's auxiliary service, recording every Log call."""

    def __init__(self) -> None:
        self.logs: list[engine_pb2.LogRequest] = []

    def Log(self, request, context):  # noqa: N802 - gRPC method name
        self.logs.append(request)
        return empty_pb2.Empty()

    def GetRootResource(self, request, context):  # noqa: N802
        return engine_pb2.GetRootResourceResponse(urn="")

    def SetRootResource(self, request, context):  # noqa: N802
        return engine_pb2.SetRootResourceResponse()


def program_inputs(mocks) -> dict[str, Any]:
    """The copy resource's inputs as the real azure-target program (sync stage) registers them."""
    mocks.stack_outputs[SOURCE_STACK] = {"bucket_name": "from-the-source-stack", "project": "acme", "frozen": False}
    pulumi_mocks.set_config({"spotshift:cloud": "azure", "azure-native:location": "westeurope",
                             "spotshift:image": "ghcr.io/example/spotshift:1.0.0", "spotshift:sshPublicKey": SSH_KEY,
                             "spotshift:migrationStage": "sync", "spotshift:sourceStack": SOURCE_STACK,
                             "spotshift:syncRound": "1", "spotshift:storageAllowedCidrs": ["203.0.113.7"]})

    @pulumi.runtime.test
    def deploy():
        azure_target.main()
        return pulumi_mocks.settled()

    deploy()
    return dict(mocks.one(DYNAMIC).inputs)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def secret(value: str) -> dict[str, str]:
    """A secret as it travels in a Struct (the SDK's signature key and value)."""
    return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def call(self, name: str, **fields: Any) -> None:
        self.lines.append(f"> {name}")
        for key, value in fields.items():
            self.lines.append(f"    {key}: {value}")

    def note(self, text: str) -> None:
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def start_provider(engine_address: str, extra_env: dict[str, str], stderr_path: Path) -> tuple[subprocess.Popen, int]:
    """The launcher as the engine runs it; returns the process and the port it printed."""
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    options = project["runtime"]["options"]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PULUMI_PROJECT": project["name"]}
    env.update({f"PULUMI_RUNTIME_{key.upper()}": str(value) for key, value in options.items()})
    env.update(extra_env)
    process = subprocess.Popen(["/bin/sh", str(LAUNCHER), engine_address], cwd=REPO_ROOT / project["main"], env=env,
                               stdout=subprocess.PIPE, stderr=stderr_path.open("w"), text=True,
                               # The launcher runs python as its child (no exec); the engine ends the
                               # plugin's whole process group, and so does this test.
                               start_new_session=True)
    first = process.stdout.readline()
    if not first.strip().isdigit():
        process.wait(timeout=10)
        raise AssertionError(f"provider did not start (exit {process.returncode}): {stderr_path.read_text()}")
    return process, int(first)


@pytest.fixture
def own_emulators(tmp_path):
    """A fake-gcs-server and an Azurite for this test alone: it stops them before the last Read."""
    with FakeGcsServer() as gcs, Azurite() as azurite, environment(gcs.env):
        yield gcs, azurite


@pytest.mark.emulator
def test_the_provider_runs_under_the_engines_launcher_and_protocol(mocks, own_emulators, tmp_path):
    gcs, azurite = own_emulators
    from app.storage.azure import AzureBlobStore
    from app.storage.gcs import GcsStore

    registered = program_inputs(mocks)
    provider_string, urn = registered["__provider"], registered["resource_urn"]
    bucket, container = "engine-src", "engine-dst"
    gcs.create_bucket(bucket)
    azurite.create_container(container)
    source = GcsStore(bucket, project=gcs.project)
    for key, data in OBJECTS.items():
        source.put(key, data, content_type="application/octet-stream")
    source.put("leases/0001", b"{}", content_type="application/json")
    account_key = [p.split("=", 1)[1] for p in azurite.connection_string.split(";") if p.startswith("AccountKey=")][0]

    inputs = {
        **{key: value for key, value in registered.items() if key not in ("__provider",)},
        "__provider": provider_string,
        "source_bucket": bucket, "gcs_project": gcs.project, "target_container": container,
        "target_account_url": None, "azure_connection_string": secret(azurite.connection_string),
        "exclude": list(DEFAULT_EXCLUDE), "workers": 4, "progress_interval": 0.2,
    }
    # The provider reaches fake-gcs-server through a proxy that can make one download hang.
    stall = {"key": ""}
    proxy = StallingProxy(gcs.url, lambda method, path: bool(stall["key"]) and method == "GET"
                          and "/download/" in path and stall["key"] in path).__enter__()
    engine = FakeEngine()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    engine_pb2_grpc.add_EngineServicer_to_server(engine, server)
    engine_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    log = Transcript()
    log.note(f"launcher: sh {LAUNCHER.name} 127.0.0.1:{engine_port}  (cwd stacks/, "
             f"PULUMI_RUNTIME_VIRTUALENV=.venv, no PYTHONPATH)")
    log.note(f"__provider from the program: {provider_string[:60]}... ({len(provider_string)} chars)")
    log.note(f"resource urn: {urn}")
    process, port = start_provider(f"127.0.0.1:{engine_port}", {**gcs.env, "STORAGE_EMULATOR_HOST": proxy.url},
                                   tmp_path / "provider.stderr")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = provider_pb2_grpc.ResourceProviderStub(channel)
    try:
        configured = stub.Configure(provider_pb2.ConfigureRequest(args=struct({}), acceptSecrets=True,
                                                                  acceptResources=True))
        log.call("Configure", acceptSecrets=configured.acceptSecrets)

        checked = stub.Check(provider_pb2.CheckRequest(urn=urn, olds=struct({}), news=struct(inputs)))
        checked_inputs = rpc.deserialize_properties(checked.inputs, True)
        log.call("Check", failures=list(checked.failures),
                 secret_kept=rpc.is_rpc_secret(checked_inputs["azure_connection_string"]))
        assert not checked.failures

        started = time.monotonic()
        created = stub.Create(provider_pb2.CreateRequest(urn=urn, properties=checked.inputs, timeout=3600))
        create_seconds = time.monotonic() - started
        outs = rpc.deserialize_properties(created.properties)
        log.call("Create", id=created.id, objects_copied=outs["objects_copied"], bytes_copied=outs["bytes_copied"],
                 objects_skipped=outs["objects_skipped"], verified=outs["verified"],
                 manifest_digest=outs["manifest_digest"][:16] + "...", completed_at=outs["completed_at"],
                 seconds=f"{create_seconds:.2f}")
        assert outs["objects_copied"] == len(OBJECTS) and outs["verified"] is True
        assert outs["bytes_copied"] == sum(map(len, OBJECTS.values()))

        source.put("jobs/0001.json", b'{"status": "done"}', content_type="application/json")
        news = {**inputs, "sync_round": int(inputs["sync_round"]) + 1}
        diffed = stub.Diff(provider_pb2.DiffRequest(id=created.id, urn=urn, olds=created.properties,
                                                    news=struct(news)))
        log.call("Diff (syncRound bumped)", changes=provider_pb2.DiffResponse.DiffChanges.Name(diffed.changes),
                 replaces=list(diffed.replaces))
        assert diffed.changes == provider_pb2.DiffResponse.DIFF_SOME and not diffed.replaces

        started = time.monotonic()
        updated = stub.Update(provider_pb2.UpdateRequest(id=created.id, urn=urn, olds=created.properties,
                                                         news=struct(news), timeout=3600))
        update_seconds = time.monotonic() - started
        round2 = rpc.deserialize_properties(updated.properties)
        log.call("Update (after the bump and one changed object)", objects_copied=round2["objects_copied"],
                 objects_skipped=round2["objects_skipped"], verified=round2["verified"],
                 manifest_digest=round2["manifest_digest"][:16] + "...", seconds=f"{update_seconds:.2f}")
        assert round2["objects_copied"] == 1 and round2["objects_skipped"] == len(OBJECTS) - 1
        assert round2["manifest_digest"] != outs["manifest_digest"]

        # Same account, new credential: stored, no copy round.
        rotated = azurite.connection_string.replace("DefaultEndpointsProtocol=http;", "") + ";"
        news3 = {**news, "azure_connection_string": secret(rotated)}
        source.put("jobs/0002.json", b"{}", content_type="application/json")  # a round would copy this
        diffed3 = stub.Diff(provider_pb2.DiffRequest(id=created.id, urn=urn, olds=updated.properties,
                                                     news=struct(news3)))
        updated3 = stub.Update(provider_pb2.UpdateRequest(id=created.id, urn=urn, olds=updated.properties,
                                                          news=struct(news3)))
        round3 = rpc.deserialize_properties(updated3.properties)
        log.call("Diff + Update (rotated connection string, same account)",
                 changes=provider_pb2.DiffResponse.DiffChanges.Name(diffed3.changes),
                 objects_copied=round3["objects_copied"], stored_credential_is_new=(
                     round3["azure_connection_string"] == rotated))
        assert diffed3.changes == provider_pb2.DiffResponse.DIFF_SOME
        assert round3["azure_connection_string"] == rotated
        assert round3["manifest_digest"] == round2["manifest_digest"]
        target = AzureBlobStore(container, connection_string=azurite.connection_string)
        assert not target.exists("jobs/0002.json"), "a credential change copies nothing"

        read = stub.Read(provider_pb2.ReadRequest(id=created.id, urn=urn, properties=updated3.properties,
                                                  inputs=struct(news3)))
        read_outs = rpc.deserialize_properties(read.properties)
        log.call("Read (emulators up)", id=read.id, manifest_digest=read_outs["manifest_digest"][:16] + "...")
        assert read_outs["manifest_digest"] == round2["manifest_digest"]

        # A stalled source: the round stops at its deadline, the Create fails saying what to do, the next resumes.
        azurite.create_container("engine-stall")
        stalled_inputs = {**inputs, "target_container": "engine-stall", "workers": 1, "deadline_seconds": 3}
        stall["key"] = "uploads%2F0035.bin"  # one worker, key order: every key before it lands first
        with pytest.raises(grpc.RpcError) as failed:
            stub.Create(provider_pb2.CreateRequest(urn=urn, properties=struct(stalled_inputs), timeout=3600))
        stall["key"] = ""
        error = failed.value.details().strip().splitlines()[-1]
        log.call("Create (source stalls, deadline 3 s)", code=failed.value.code().name, error=error)
        in_source = len(OBJECTS) + 1  # with jobs/0002.json, written during the rotation step
        # How many land before the deadline depends on the machine's speed (all keys before the
        # stalled one, on an idle machine); what the error reports must match what is there.
        counts = re.search(r"(\d+) of (\d+) planned objects", error)
        assert "stopped at its deadline" in error and counts, error
        landed, planned = int(counts[1]), int(counts[2])
        stalled_target = AzureBlobStore("engine-stall", connection_string=azurite.connection_string)
        keys = [info.key for info in stalled_target.list()]
        assert landed == len(keys) and landed < planned <= in_source, error
        assert all(key < "uploads/0035.bin" for key in keys), "one worker copies in key order"
        assert "Run `pulumi up` again" in error
        resumed = stub.Create(provider_pb2.CreateRequest(urn=urn, properties=struct(
            {**stalled_inputs, "deadline_seconds": 600}), timeout=3600))
        resumed_outs = rpc.deserialize_properties(resumed.properties)
        log.call("Create again (source answers)", objects_copied=resumed_outs["objects_copied"],
                 objects_skipped=resumed_outs["objects_skipped"], verified=resumed_outs["verified"])
        assert resumed_outs["objects_copied"] == in_source - landed and resumed_outs["objects_skipped"] == landed

        stub.Delete(provider_pb2.DeleteRequest(id=created.id, urn=urn, properties=updated3.properties))
        kept = sorted(info.key for info in target.list())
        target.close()
        log.call("Delete", blobs_left=len(kept))
        assert kept == sorted(OBJECTS), "delete leaves every blob in place"

        azurite.stop()
        gcs.stop()
        read = stub.Read(provider_pb2.ReadRequest(id=created.id, urn=urn, properties=updated3.properties,
                                                  inputs=struct(news3)), timeout=30)
        log.call("Read (both emulators stopped)", id=read.id,
                 verified=rpc.deserialize_properties(read.properties)["verified"])
        assert read.id == created.id
    finally:
        channel.close()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        server.stop(0)
        proxy.__exit__(None, None, None)

    log.note("engine Log calls received (severity, ephemeral, urn matches, message):")
    for entry in engine.logs:
        log.note(f"    {engine_pb2.LogSeverity.Name(entry.severity)} ephemeral={entry.ephemeral} "
                 f"urn_ok={entry.urn == urn} {entry.message}")
    text = log.text()
    (tmp_path / "transcript.txt").write_text(text)
    if os.environ.get("SPOTSHIFT_ENGINE_TRANSCRIPT"):
        Path(os.environ["SPOTSHIFT_ENGINE_TRANSCRIPT"]).write_text(text)

    messages = [entry.message for entry in engine.logs]
    assert all(entry.urn == urn for entry in engine.logs), "progress is addressed to the copy resource"
    assert any(entry.ephemeral for entry in engine.logs), "status lines for the progress display"
    assert any(m.startswith("copy: ") and f"/{len(OBJECTS)} objects" in m and "/s" in m for m in messages), messages
    assert any(m.startswith("copy round done: 1 copied") for m in messages), messages
    assert any("stopped at its deadline" in m and "Run `pulumi up` again" in m for m in messages), messages
    assert any(m.startswith("stored the changed inputs (azure_connection_string); no copy round") for m in messages)
    assert account_key not in text and account_key not in (tmp_path / "provider.stderr").read_text()
    assert not any(account_key in m for m in messages), "no credential in a log line"


def test_the_launcher_refuses_a_main_directory_without_the_venv(tmp_path):
    """The failure the stacks/.venv symlink prevents (pulumi/pulumi#7907): the launcher resolves against $PWD."""
    main = tmp_path / "stacks"
    main.mkdir()

    launched = subprocess.run(["/bin/sh", str(LAUNCHER), "127.0.0.1:1"], cwd=main, capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], "PULUMI_RUNTIME_VIRTUALENV": ".venv"}, timeout=30)

    assert launched.returncode == 1
    assert f'is set to "{main}/.venv", but "{main}/.venv" doesn\'t exist' in launched.stderr
