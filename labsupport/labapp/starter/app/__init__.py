"""The course's movie API."""
