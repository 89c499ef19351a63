"""Built-in processors: tracking, drawing, and (later) detection, counting, faces."""
