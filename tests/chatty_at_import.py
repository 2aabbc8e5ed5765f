import sys

# Imported into a template by a test: writes to stderr while imported, as torchao does.
print("W1126 chatter from an import", file=sys.stderr)
