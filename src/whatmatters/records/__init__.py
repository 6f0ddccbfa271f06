"""What a run leaves behind, readable without torch: the typed run record (`record`), the results store
(`store`; its workers claim keys through `claims`) and the statistics every table and figure uses
(`metrics`: paired differences, intervals, SDR)."""
