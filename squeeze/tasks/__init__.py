"""Tasks: sentiment (sequence classification), ner (token classification), dialogue (GPT-2 LM)."""
