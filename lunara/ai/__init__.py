"""Optional AI commentary on the analyzer's output (Gemini), loaded only when configured."""
