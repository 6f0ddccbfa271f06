"""Tables and figures from records, no torch: table rows (`tables`), table files (`table_files`), figures
(`plots`), the speed-accuracy plot and healing table (`pareto`), run labels (`labels`)."""
