# The two commands a newcomer needs (see README.md).
.PHONY: demo test
PYTHON ?= python3

demo:  ## install, then serve the built-in avatar over WebRTC and print the URL
	bash scripts/setup.sh cpu
	$(PYTHON) -m ideal serve

test:  ## install what the tests need, then run the test suite
	bash scripts/test.sh
