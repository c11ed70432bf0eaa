"""The demo model: a small SD-family checkpoint trained here on procedural shapes (issue 11)."""
