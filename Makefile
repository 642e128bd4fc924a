# The book's only entry point. `make help` lists what it can do.
#
# chapters/NN-slug.md --tangle--> tangled/ (committed) + build/tangled/ (#line twin)
# build/tangled/ --g++--> build/bin/chNN_slug, build/tests/chNN_slug_test
# build/bin/chNN_slug --run--> figures/chNN/ --sphinx--> build/book/html

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.SECONDARY:
NPROC := $(shell nproc 2>/dev/null || echo 2)
MAKEFLAGS += --no-builtin-rules
ifeq ($(MAKELEVEL),0)
MAKEFLAGS += --jobs=$(NPROC)
endif

PYTHON := /usr/bin/python3
SPHINX := /usr/bin/sphinx-build
CXX := g++

# Debian packages the book needs (installed by `make deps` when missing).
DEBIAN_PACKAGES := make g++ libxtensor-dev libxtensor-blas-dev libxsimd-dev libopenblas-dev \
  gnuplot-nox libgnuplot-iostream-dev libboost-test-dev libboost-iostreams-dev \
  libboost-system-dev libboost-filesystem-dev python3-markdown-it python3-pytest \
  python3-sphinx python3-myst-parser furo python3-breathe python3-sphinx-copybutton \
  doxygen libjs-mathjax librsvg2-bin fonts-dejavu-core chromium

# SANITIZE=1 builds everything with AddressSanitizer and UBSan in its own folder.
ifeq ($(SANITIZE),1)
BUILD := build/sanitize
OPT := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
BUILD := build
OPT := -O2
endif

TWIN := build/tangled
CPPFLAGS := -I$(TWIN)/include -DTESTS_DIR='"$(CURDIR)/tests"' -DBUILD_DIR='"$(CURDIR)/$(BUILD)"' -DATTN_STYLE_FILE='"$(CURDIR)/figures/style.gp"'
CXXFLAGS := -std=c++17 $(OPT) -Wall -Wextra -MMD -MP
LDLIBS := -lopenblas -lboost_iostreams -lboost_system -lboost_filesystem -lpthread
TEST_LDLIBS := -lboost_unit_test_framework

CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]-*.md))
# chapters/01-self-attention.md -> ch01_self_attention
prog_of = ch$(subst -,_,$(basename $(notdir $(1))))
PROGRAMS := $(foreach c,$(CHAPTERS),$(call prog_of,$(c)))
SHORT := $(foreach p,$(PROGRAMS),$(firstword $(subst _, ,$(p))))
BINS := $(PROGRAMS:%=$(BUILD)/bin/%)
TESTS := $(foreach p,$(PROGRAMS),$(if $(wildcard tests/$(p)_test.cpp),$(BUILD)/tests/$(p)_test))
RUNS := $(SHORT:%=build/run/%.stamp)
TOOLS := tools/tangle.py tools/chunks.py
DOXYGEN_STAMP := build/doxygen/xml/index.xml

.PHONY: help deps tangle check-tangle build figures test book check-browser serve clean check \
        $(SHORT) $(SHORT:%=run-%) $(SHORT:%=test-%)

help: ## list the targets
	@echo "The attention book. Targets:"
	@grep -hE '^[a-zA-Z%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  make \1\t\2/' | expand -t 24
	@echo "  make chNN / run-chNN / test-chNN   build, run or test one chapter (chapters: $(SHORT))"
	@echo "  SANITIZE=1                 build with AddressSanitizer and UBSan (e.g. make test SANITIZE=1)"

deps: ## install the Debian packages that are missing (a no-op when all are there)
	@tools/deps.sh $(DEBIAN_PACKAGES)

# ---------------------------------------------------------------- tangle

tangle: build/tangle.stamp ## extract the chapters' chunks into tangled/ (and the #line twin in build/)

build/tangle.stamp: $(CHAPTERS) $(TOOLS)
	@mkdir -p $(@D)
	@echo "  tangle   $(words $(CHAPTERS)) chapters -> tangled/"
	@$(PYTHON) tools/tangle.py --quiet $(CHAPTERS)
	@touch $@

# Every tangled file is made by the tangle step; it only rewrites files whose text changed.
$(TWIN)/%: build/tangle.stamp ;

check-tangle: ## fail, naming each file, if tangled/ is out of sync with chapters/
	@$(PYTHON) tools/tangle.py --check $(CHAPTERS)

# ---------------------------------------------------------------- build

build: $(BINS) $(TESTS) ## compile every chapter's program and tests

$(BUILD)/obj/%.o: $(TWIN)/programs/%.cpp
	@mkdir -p $(@D)
	@echo "  compile  $*"
	@$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/bin/%: $(BUILD)/obj/%.o
	@mkdir -p $(@D)
	@$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

$(BUILD)/obj/tests/%.o: tests/%.cpp | build/tangle.stamp
	@mkdir -p $(@D)
	@echo "  compile  $* (tests)"
	@$(CXX) $(CPPFLAGS) -Itests $(CXXFLAGS) -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o
	@mkdir -p $(@D)
	@$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS) $(TEST_LDLIBS)

# The instruments' tests run the appendix's program to check which BLAS core it chooses.
$(BUILD)/tests/ch00_instruments_test: $(BUILD)/bin/ch00_instruments

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- run

# A chapter's figures are written to a fresh folder that replaces figures/chNN only when the
# program succeeds, so a failed run never leaves half a set of figures. Timed runs never share
# the machine with the build: they wait (order-only) until every program is compiled and the
# API reference is extracted, and they run one at a time (flock), even under -j.
build/run/%.stamp: figures/style.gp | $(BINS) $(DOXYGEN_STAMP)
	@mkdir -p $(@D)
	@echo "  run      $(PROG_$*) -> figures/$* (timed: alone, after the build)"
	@rm -rf figures/$*.partial
	@flock build/run/.lock $(BUILD)/bin/$(PROG_$*) --out figures/$*.partial > build/run/$*.log 2>&1 \
	  || { cat build/run/$*.log; rm -rf figures/$*.partial; exit 1; }
	@rm -rf figures/$* && mv figures/$*.partial figures/$*
	@echo "  figures  figures/$*: $$(find figures/$* -type f | wc -l) files"
	@touch $@

# A chapter whose program reads what an earlier chapter's program wrote (from figures/chNN/)
# names that run here, e.g. "build/run/ch05.stamp: build/run/ch04.stamp".
build/run/ch05.stamp: build/run/ch04.stamp

figures: $(RUNS) ## run every chapter's program (one at a time, so timings are honest)

# ---------------------------------------------------------------- test

test: deps ## build and run every test, ending with 'tests: N passed, N failed'
	@$(MAKE) --no-print-directory -s $(TESTS)
	@$(PYTHON) tools/run_tests.py --pytest tests/tools --pytest tests/book $(TESTS)

# ---------------------------------------------------------------- book

# The clean headers are rewritten by the tangle step only when their text changes.
tangled/%: build/tangle.stamp ;

$(DOXYGEN_STAMP): book/Doxyfile build/tangle.stamp $(wildcard tangled/include/attn/*.hpp)
	@rm -rf build/doxygen/xml && mkdir -p build/doxygen
	@echo "  doxygen  tangled/include"
	@doxygen book/Doxyfile > build/doxygen/log.txt 2>&1 || { cat build/doxygen/log.txt; exit 1; }
	@touch $@

BOOK_SOURCES := $(CHAPTERS) $(shell find book -type f -not -name '*.pyc' 2>/dev/null) tools/chunks.py tools/tangle.py

build/book/html/index.html: $(BOOK_SOURCES) $(RUNS) $(DOXYGEN_STAMP)
	@echo "  sphinx   build/book/html"
	@$(SPHINX) -b html -d build/book/doctrees -W --keep-going -n -q book build/book/html \
	  || { rm -rf build/book/doctrees; exit 1; }  # so the next build reads every page and repeats each warning
	@touch $@

book: deps ## build the HTML book into build/book/html (tangles, builds, runs every chapter)
	@$(MAKE) --no-print-directory -s build/book/html/index.html
	@echo "book: open build/book/html/index.html"

# Headless Chromium loads every page from a server on 127.0.0.1 and fails on a broken image,
# link or anchor, a JavaScript error or any request to another host; screenshots stay in build/.
check-browser: book ## load every page of the book in headless Chromium; fail on anything broken
	@echo "  browser  build/book/html (screenshots in build/book/screenshots)"
	@$(PYTHON) tests/book/browser.py --screenshots build/book/screenshots build/book/html

serve: book ## serve the book on http://127.0.0.1:8000
	@cd build/book/html && $(PYTHON) -m http.server 8000 --bind 127.0.0.1

# ---------------------------------------------------------------- per chapter

define chapter_rules
PROG_$(2) := $(1)
build/run/$(2).stamp: $(BUILD)/bin/$(1)
$(2): $(BUILD)/bin/$(1) ## build one chapter's program
run-$(2): $(BUILD)/bin/$(1)
	@rm -f build/run/$(2).stamp
	@$$(MAKE) --no-print-directory -s build/run/$(2).stamp
	@cat build/run/$(2).log
test-$(2): $(if $(wildcard tests/$(1)_test.cpp),$(BUILD)/tests/$(1)_test)
	@$(PYTHON) tools/run_tests.py $$^
endef
$(foreach p,$(PROGRAMS),$(eval $(call chapter_rules,$(p),$(firstword $(subst _, ,$(p))))))

# ---------------------------------------------------------------- housekeeping

check: deps ## what CI runs: tangle check, build, book with -W, every test, the browser check
	@$(MAKE) --no-print-directory check-tangle
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory -s build/book/html/index.html
	@$(PYTHON) tools/run_tests.py --pytest tests/tools --pytest tests/book $(TESTS)
	@$(PYTHON) tests/book/browser.py --screenshots build/book/screenshots build/book/html

clean: ## remove build/ and the generated figures (tangled/ is kept: it is committed)
	rm -rf build $(wildcard figures/ch[0-9]*)
