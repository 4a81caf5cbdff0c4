"""Pulumi mocks that record every registration (type, name, inputs and resource options).

``new_resource`` echoes the inputs (wire names, camelCase) and adds only the
provider-computed fields spotshift reads; ``call`` answers the invokes the
components make, by token. ``RecordingMonitor`` also keeps the options each
registration carried (``replaceOnChanges``, ``deleteBeforeReplace``, ...), as
the engine would receive them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

PROJECT = "spotshift"
SUBSCRIPTION_ID = "00000000-1111-2222-3333-444444444444"
TENANT_ID = "99999999-8888-7777-6666-555555555555"
DEPLOYER_OBJECT_ID = "dddddddd-eeee-ffff-0000-111111111111"
IDENTITY_CLIENT_ID = "c1c1c1c1-0000-4000-8000-000000000001"
IDENTITY_PRINCIPAL_ID = "b2b2b2b2-0000-4000-8000-000000000002"
GCP_API_IP = "203.0.113.10"
AZURE_API_IP = "198.51.100.20"
GCP_ACCESS_TOKEN = "ya29.mock-access-token"
AZURE_CLIENT_TOKEN = "eyJ.mock-entra-token"
DIGEST = "sha256:" + "ab" * 32
MANIFEST_DIGEST = "cd" * 32


@dataclass
class Registration:
    """One registered resource as the engine saw it."""

    type: str
    name: str
    inputs: dict[str, Any]
    id: str
    options: dict[str, Any] = field(default_factory=dict)


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:7]


def _resource_id(typ: str, name: str, inputs: Mapping[str, Any]) -> str:
    if typ.startswith("azure-native:"):
        provider = typ.split(":")[1]
        return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg/providers/Microsoft.{provider}/{typ.split(':')[2]}/{name}"
    return f"{name}-id"


def _computed(typ: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Provider-computed outputs that spotshift reads; everything else is the echoed inputs."""
    if typ == "gcp:serviceaccount/account:Account":
        return {"email": f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"}
    if typ == "gcp:storage/bucket:Bucket":
        bucket = inputs.get("name") or f"{name}-{_suffix(name)}"
        return {"name": bucket, "url": f"gs://{bucket}"}
    if typ == "gcp:storage/bucketObject:BucketObject":
        return {"outputName": inputs["name"], "generation": 1764620000000000}
    if typ == "gcp:compute/address:Address":
        return {"address": GCP_API_IP}
    if typ == "gcp:compute/instanceTemplate:InstanceTemplate":
        template = f"{inputs['namePrefix']}{_suffix(json.dumps(inputs, sort_keys=True, default=str))}"
        link = f"https://www.googleapis.com/compute/v1/projects/{inputs['project']}/global/instanceTemplates/{template}"
        return {"name": template, "selfLink": link, "selfLinkUnique": f"{link}?uniqueId=4242"}
    if typ == "gcp:compute/instanceGroupManager:InstanceGroupManager":
        group = inputs.get("name") or f"{name}-{_suffix(name)}"
        return {"name": group, "instanceGroup": f"zones/{inputs['zone']}/instanceGroups/{group}"}
    if typ == "gcp:artifactregistry/repository:Repository":
        return {"name": inputs["repositoryId"]}
    if typ == "docker:index/image:Image":
        return {"repoDigest": f"{inputs['imageName'].rsplit(':', 1)[0]}@{DIGEST}"}
    if typ == "azure-native:resources:ResourceGroup":
        return {"name": inputs.get("resourceGroupName") or f"{name}{_suffix(name)}"}
    if typ == "azure-native:storage:StorageAccount":
        account = inputs["accountName"]
        return {"name": account, "primaryEndpoints": {"blob": f"https://{account}.blob.core.windows.net/"}}
    if typ == "azure-native:storage:BlobContainer":
        return {"name": inputs["containerName"]}
    if typ == "azure-native:managedidentity:UserAssignedIdentity":
        return {"name": name, "clientId": IDENTITY_CLIENT_ID, "principalId": IDENTITY_PRINCIPAL_ID}
    if typ == "azure-native:network:PublicIPAddress":
        return {"name": name, "ipAddress": AZURE_API_IP}
    if typ in ("azure-native:compute:VirtualMachine", "azure-native:compute:VirtualMachineScaleSet"):
        # The API takes a list of identity ids and answers with a map id -> ids.
        identity = dict(inputs.get("identity") or {})
        identity["userAssignedIdentities"] = {
            identity_id: {"clientId": IDENTITY_CLIENT_ID, "principalId": IDENTITY_PRINCIPAL_ID}
            for identity_id in identity.get("userAssignedIdentities", [])
        }
        return {"name": name, "identity": identity}
    if typ == "azure-native:containerregistry:Registry":
        return {"name": inputs["registryName"], "loginServer": f"{inputs['registryName']}.azurecr.io"}
    if typ == "pulumi-python:dynamic/spotshift:MigrationRun":
        # What the provider's create returns after a clean round (the real one is tested directly).
        return {"objects_planned": 0, "objects_copied": 0, "bytes_copied": 0, "objects_skipped": 0,
                "bytes_skipped": 0, "objects_failed": 0, "objects_deleted": 0, "failures": [],
                "verified": True, "manifest_digest": MANIFEST_DIGEST}
    if typ.startswith("azure-native:") or typ.startswith("gcp:"):
        return {"name": inputs.get("name") or f"{name}-{_suffix(name)}"}
    return {}


class SpotshiftMocks(pulumi.runtime.Mocks):
    """Records registrations and invokes; answers with echoed inputs plus the computed fields above."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.calls: list[MockCallArgs] = []
        self._pending_options: dict[tuple[str, str], dict[str, Any]] = {}
        self.component_outputs: dict[str, dict[str, Any]] = {}
        #: What each referenced stack exports, by fully qualified stack name (StackReference).
        self.stack_outputs: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """Echo the inputs plus the computed fields spotshift reads."""
        resource_id = _resource_id(args.typ, args.name, args.inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            stack = args.inputs.get("name") or args.name
            self.registrations.append(Registration(args.typ, args.name, dict(args.inputs), stack))
            return stack, {"name": stack, "outputs": self.stack_outputs.get(stack, {}), "secretOutputNames": []}
        outputs = {**args.inputs, **_computed(args.typ, args.name, args.inputs)}
        options = self._pending_options.pop((args.typ, args.name), {})
        self.registrations.append(Registration(args.typ, args.name, dict(args.inputs), resource_id, options))
        return resource_id, outputs

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Answer the invokes spotshift makes, by token."""
        self.calls.append(args)
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": "deployer-client-id",
                "objectId": DEPLOYER_OBJECT_ID,
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            }, []
        if args.token == "azure-native:authorization:getClientToken":
            return {"token": AZURE_CLIENT_TOKEN}, []
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": GCP_ACCESS_TOKEN, "id": "client", "project": "", "region": "", "zone": ""}, []
        raise NotImplementedError(f"no mock for invoke {args.token}")

    # -- queries used by the tests ------------------------------------------------

    def of_type(self, typ: str) -> list[Registration]:
        """Every registration of ``typ``."""
        return [registration for registration in self.registrations if registration.type == typ]

    def one(self, typ: str, where: Callable[[Registration], bool] | None = None) -> Registration:
        """The single registration of ``typ`` (matching ``where``); fails when there are none or several."""
        found = [registration for registration in self.of_type(typ) if where is None or where(registration)]
        assert len(found) == 1, f"expected exactly one {typ}, got {[r.name for r in found]}"
        return found[0]

    def type_counts(self, custom_only: bool = True) -> Counter[str]:
        """How many resources of each type (cloud resources only, unless ``custom_only`` is False)."""
        return Counter(
            registration.type
            for registration in self.registrations
            if not custom_only or not registration.type.startswith("spotshift:")
        )


class RecordingMonitor(MockMonitor):
    """A MockMonitor that also keeps each registration's resource options."""

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Record the options, then register as the stock mock monitor does."""
        self.mocks._pending_options[(request.type, request.name)] = {
            "replaceOnChanges": list(request.replaceOnChanges),
            "deleteBeforeReplace": request.deleteBeforeReplace,
            "ignoreChanges": list(request.ignoreChanges),
            "parent": request.parent,
            "dependencies": list(request.dependencies),
            "additionalSecretOutputs": list(request.additionalSecretOutputs),
            "protect": request.protect,
            "retainOnDelete": request.retainOnDelete,
        }
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Record which outputs each component registered."""
        from pulumi.runtime import rpc

        if "::pulumi:pulumi:Stack::" not in request.urn:
            self.mocks.component_outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)


#: Every resource object constructed since the last ``reset``; ``settled()`` waits on their URNs.
_CONSTRUCTED: list[pulumi.Resource] = []


def _capture(args: pulumi.ResourceTransformationArgs) -> None:
    _CONSTRUCTED.append(args.resource)
    return None


def install(stack: str = "test") -> SpotshiftMocks:
    """Install fresh mocks (and the capture transformation, once); return them."""
    mocks = SpotshiftMocks()
    # Other tests (TestClient, asyncio.run) may have closed or replaced the event loop, and
    # set_mocks keeps an existing root stack whose futures belong to the old loop: start both afresh.
    try:
        loop_closed = asyncio.get_event_loop().is_closed()
    except RuntimeError:
        loop_closed = True
    if loop_closed:
        asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks))
    root = pulumi.runtime.get_root_resource()
    if _capture not in (root._transformations or []):
        pulumi.runtime.register_stack_transformation(_capture)
    _CONSTRUCTED.clear()
    return mocks


def settled() -> pulumi.Output[None]:
    """An Output that resolves once every resource constructed so far is registered."""
    return pulumi.Output.all(*[resource.urn for resource in list(_CONSTRUCTED)]).apply(lambda _: None)


def set_config(values: Mapping[str, Any]) -> None:
    """Replace the stack config: lists as JSON, booleans as true/false, the rest as strings."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (list, dict)):
            return json.dumps(value)
        return str(value)

    pulumi.runtime.set_all_config({key: text(value) for key, value in values.items()})


def decoded_custom_data(registration: Registration, path: tuple[str, ...]) -> str:
    """The cloud-init document under ``path`` (base64 custom data) of an Azure registration."""
    import base64

    value: Any = registration.inputs
    for key in path:
        value = value[key]
    return base64.b64decode(value).decode()
