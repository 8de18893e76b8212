"""Benchmark scenarios: every module here is imported by `bench.scenario.load_scenarios()`.

Add one by dropping a module that defines `@register`-ed `Scenario` subclasses.
"""
