--- pd.optim: the optimisation toolbox behind pd.minimize and pd.maximize
-- (for now all of it in pd.optim.driver, which is being split by job).
return require "pd.optim.driver"
