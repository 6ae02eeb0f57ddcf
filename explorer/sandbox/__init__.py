"""The sandbox web: a seeded offline stand-in for the internet (ARCHITECTURE.md, "explorer/sandbox/")."""
from explorer.sandbox.server import Sandbox, SandboxServer, serve, start_sandbox
from explorer.sandbox.world import ImageInfo, World, image_id_of_url

__all__ = ["World", "ImageInfo", "image_id_of_url", "Sandbox", "SandboxServer", "start_sandbox", "serve"]
