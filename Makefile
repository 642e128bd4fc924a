# The book's only entry point. `make help` lists what it can do.
#
# chapters/NN-slug.md --tangle--> tangled/ (committed) + build/tangled/ (#line twin) + build/tangle/keys/
# build/tangled/ --g++--> build/bin/chNN_slug, build/tests/chNN_slug_test  (when the key changed)
# build/bin/chNN_slug --run--> figures/chNN/ --sphinx--> build/book/html
#
# What make compares is content, not line numbers: compiles and Doxygen depend on the keys
# (the code without its chapter line numbers), so a prose edit that moves code down a chapter
# recompiles nothing and reruns nothing; a run is repeated when its program's content changed
# or figures/chNN is not what the run published. The tangler runs while make reads this file
# (it makes build/tangle/outputs.mk, which is included), so even `make -n` sees the tangled
# files as they are, and tells the truth about what it would compile and run.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
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

STATE := build/tangle
KEYS := $(STATE)/keys
# SANITIZE=1 compiles against the twin itself, so a sanitizer's trace always names the chapter's
# current lines (a prose edit then recompiles); the optimised build compiles when the key changes.
ifeq ($(SANITIZE),1)
DEPS_ON := $(TWIN)
else
DEPS_ON := $(KEYS)
endif
# the dependency file names the twin; make the object depend on what DEPS_ON says
rekey = $(if $(filter $(KEYS),$(DEPS_ON)),sed -i 's@\(^\| \)$(TWIN)/@\1$(KEYS)/@g' $(1))

CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]-*.md))
# chapters/01-self-attention.md -> ch01_self_attention
prog_of = ch$(subst -,_,$(basename $(notdir $(1))))
PROGRAMS := $(foreach c,$(CHAPTERS),$(call prog_of,$(c)))
SHORT := $(foreach p,$(PROGRAMS),$(firstword $(subst _, ,$(p))))
BINS := $(PROGRAMS:%=$(BUILD)/bin/%)
TESTS := $(foreach p,$(PROGRAMS),$(if $(wildcard tests/$(p)_test.cpp),$(BUILD)/tests/$(p)_test))
# Runs of the sanitized build have their own stamps and figures: the book never quotes them.
RUN := $(BUILD)/run
ifeq ($(SANITIZE),1)
FIGURES := $(BUILD)/figures
else
FIGURES := figures
endif
RUNS := $(SHORT:%=$(RUN)/%.stamp)
OBJECTS := $(PROGRAMS:%=$(BUILD)/obj/%.o) $(patsubst $(BUILD)/tests/%,$(BUILD)/obj/tests/%.o,$(TESTS))
TOOLS := tools/tangle.py tools/chunks.py tools/expand.py tools/book_model.py
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

# The tangler runs as make reads this file, whenever a chapter or the tangler changed, or one
# of the files it wrote (listed in outputs.mk) is missing or newer than its last run: a deleted
# twin is written again, and a file of tangled/ edited by hand is refused, by name (FORCE=1
# discards the edit). It writes only files whose content changed. Goals that must see the
# committed tangled/ as it is (check-tangle, check) or need no C++ do not tangle.
NO_TANGLE_GOALS := help deps clean check check-tangle
ifneq ($(filter-out $(NO_TANGLE_GOALS),$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
include $(STATE)/outputs.mk
# a chapter added or removed
ifneq ($(strip $(TANGLE_CHAPTERS)),$(strip $(CHAPTERS)))
$(STATE)/outputs.mk: FORCE
endif
# runs whose published figures are missing or changed since (e.g. a program run by hand)
STALE_RUNS := $(shell $(PYTHON) tools/run_chapter.py --stale --runs $(RUN) --figures $(FIGURES) $(SHORT))
$(STALE_RUNS:%=$(RUN)/%.stamp): FORCE
endif

$(STATE)/outputs.mk: $(CHAPTERS) $(TOOLS) $(TANGLE_OUTPUTS)
	@echo "  tangle   $(words $(CHAPTERS)) chapters -> tangled/"
	@mkdir -p build && flock build/.tangle.lock $(PYTHON) tools/tangle.py --quiet $(if $(FORCE),--force) --state $(STATE) $(CHAPTERS)
	@touch $@

$(TANGLE_OUTPUTS): ;

FORCE:
.PHONY: FORCE

tangle: $(STATE)/outputs.mk ## extract the chapters' chunks into tangled/ (and the #line twin in build/); FORCE=1 discards hand edits
	@echo "tangle: tangled/ and $(TWIN)/ hold what the chapters say"

check-tangle: ## fail, naming each file, if tangled/ is out of sync with chapters/
	@$(PYTHON) tools/tangle.py --check $(CHAPTERS)

# ---------------------------------------------------------------- build

build: $(BINS) $(TESTS) ## compile every chapter's program and tests

# Objects are kept (they are intermediate only in make's sense); nothing else is intermediate.
.SECONDARY: $(OBJECTS)

# The optimised build parses the libraries once: every object starts from a precompiled
# header of xtensor and gnuplot-iostream (a third of each compile). SANITIZE=1 goes without,
# so that each file is still compiled from its own includes alone.
ifeq ($(SANITIZE),1)
PCH_INCLUDE :=
PCH_GCH :=
else
PCH := $(BUILD)/pch/precompiled.hpp
PCH_INCLUDE := -include $(PCH) -Winvalid-pch
PCH_GCH := $(PCH).gch
$(PCH_GCH): tools/precompiled.hpp
	@mkdir -p $(@D)
	@echo "  compile  precompiled.hpp (the libraries, once)"
	@cp $< $(PCH)
	@$(CXX) $(filter-out -MMD -MP,$(CXXFLAGS)) -x c++-header $(PCH) -o $@
# the appendix's program includes OpenBLAS's <cblas.h>, which clashes with xtensor-blas's
$(BUILD)/obj/ch00_instruments.o: PCH_INCLUDE :=
endif

$(BUILD)/obj/%.o: $(DEPS_ON)/programs/%.cpp $(PCH_GCH) | $(STATE)/outputs.mk
	@mkdir -p $(@D)
	@echo "  compile  $*"
	@$(CXX) $(CPPFLAGS) $(PCH_INCLUDE) $(CXXFLAGS) -c $(TWIN)/programs/$*.cpp -o $@
	@$(call rekey,$(@:.o=.d))

$(BUILD)/bin/%: $(BUILD)/obj/%.o
	@mkdir -p $(@D)
	@$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

$(BUILD)/obj/tests/%.o: tests/%.cpp $(PCH_GCH) | $(STATE)/outputs.mk
	@mkdir -p $(@D)
	@echo "  compile  $* (tests)"
	@$(CXX) $(CPPFLAGS) -Itests $(PCH_INCLUDE) $(CXXFLAGS) -c $< -o $@
	@$(call rekey,$(@:.o=.d))

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o
	@mkdir -p $(@D)
	@$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS) $(TEST_LDLIBS)

# The instruments' tests run the appendix's program to check which BLAS core it chooses.
$(BUILD)/tests/ch00_instruments_test: $(BUILD)/bin/ch00_instruments
# The figure tests of chapters 7-12 run their chapter's program with --quick.
$(foreach c,ch07_sparse_transformer ch08_longformer ch09_bigbird ch10_linformer \
  ch11_performer ch12_reformer,$(eval $(BUILD)/tests/$(c)_test: $(BUILD)/bin/$(c)))

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- run

# A chapter's figures are written to a fresh folder that replaces $(FIGURES)/chNN only when the
# program succeeds, so a failed run never leaves half a set of figures. Timed runs never share
# the machine with the build: they wait (order-only) until every program is compiled and the
# API reference is extracted, and they run one at a time (a lock), even under -j. The stamp
# records a hash of the program and inputs and what was published: a relinked program whose
# content did not change is not run again, and a published folder changed by hand is.
# (`make run-chNN` runs one chapter as soon as its own program is built: ONE_RUN=1.)
RUN_AFTER := $(if $(ONE_RUN),,$(BINS) $(DOXYGEN_STAMP))
$(RUN)/%.stamp: figures/style.gp | $(RUN_AFTER)
	@mkdir -p $(@D)
	@$(PYTHON) tools/run_chapter.py --program $(BUILD)/bin/$(PROG_$*) --out $(FIGURES)/$* --stamp $@ \
	  --log $(RUN)/$*.log --lock $(RUN)/.lock $(addprefix --input ,$(filter-out $(BUILD)/bin/% FORCE,$^)) \
	  $(addprefix --arg=,$(ARGS_$*))

# A chapter whose program reads what an earlier chapter's program wrote (from figures/chNN/)
# names that run here, e.g. "$(RUN)/ch05.stamp: $(RUN)/ch04.stamp".
$(RUN)/ch05.stamp: $(RUN)/ch04.stamp
ARGS_ch05 := --model $(FIGURES)/ch04/model.txt

figures: $(RUNS) ## run every chapter's program (one at a time, so timings are honest)

# ---------------------------------------------------------------- test

test: deps ## build and run every test, ending with 'tests: N passed, N failed'
	@$(MAKE) --no-print-directory -s $(TESTS)
	@$(PYTHON) tools/run_tests.py --pytest tests/tools --pytest tests/book $(TESTS)

# ---------------------------------------------------------------- book

# Doxygen reads the clean headers; it runs again when their keys change (their code, or the
# set of headers), not when a prose edit moves their chunks' line numbers.
$(DOXYGEN_STAMP): book/Doxyfile $(STATE)/roots.list $(filter $(KEYS)/include/%,$(TANGLE_OUTPUTS)) | $(STATE)/outputs.mk
	@rm -rf build/doxygen/xml && mkdir -p build/doxygen
	@echo "  doxygen  tangled/include"
	@doxygen book/Doxyfile > build/doxygen/log.txt 2>&1 || { cat build/doxygen/log.txt; exit 1; }
	@touch $@

BOOK_SOURCES := $(CHAPTERS) $(shell find book -type f -not -name '*.pyc' 2>/dev/null) $(TOOLS)

ifeq ($(SANITIZE),1)
build/book/html/index.html:
	@echo "make: the book quotes timings, which a sanitized build would make wrong; build it without SANITIZE=1" >&2
	@exit 2
else
# Sphinx reads and writes the pages on every core (the weave is safe in parallel).
build/book/html/index.html: $(BOOK_SOURCES) $(RUNS) $(DOXYGEN_STAMP)
	@echo "  sphinx   build/book/html"
	@$(SPHINX) -j $(NPROC) -b html -d build/book/doctrees -W --keep-going -n -q book build/book/html \
	  || { rm -rf build/book/doctrees; exit 1; }  # so the next build reads every page and repeats each warning
	@touch $@
endif

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
$(RUN)/$(2).stamp: $(BUILD)/bin/$(1)
$(2): $(BUILD)/bin/$(1) ## build one chapter's program
run-$(2): $(BUILD)/bin/$(1)
	@rm -f $(RUN)/$(2).stamp
	@$$(MAKE) --no-print-directory -s ONE_RUN=1 $(RUN)/$(2).stamp
	@cat $(RUN)/$(2).log
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
