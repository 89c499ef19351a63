"""Detectors that find objects in pixels (people, faces) for processors to build on."""
