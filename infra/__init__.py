"""Pulumi components for spotshift: ``infra.gcp``, ``infra.azure``, the cloud-init renderer and images.

Import the cloud packages explicitly (``from infra.gcp import GcpSpotWorkload``);
this package stays empty so importing one cloud never loads the other's SDK.
"""
