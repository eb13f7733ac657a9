"""Stand-in for the AUTOMATIC1111 WebUI's ``modules`` package (v1.10.1), for tests on the CPU."""
