"""What the test layers share besides fixtures: the fake HTTP API, the test plugins (installed
as a distribution by conftest), the in-process CLI and helpers that read a database directly."""
