"""Trading engine parts: trailing-stop maths, symbol filters and the stop state store."""
