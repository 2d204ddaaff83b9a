# Copyright 2026 The vecdit authors. Apache-2.0.
