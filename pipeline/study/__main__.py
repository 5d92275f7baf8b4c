from pipeline.study import main

main()
